-- Calls mark_rollups_of_row for each jobs row inserted with created_at or completed_at over a day
-- old: only such a row can lie in a closed rollup period (closed a day after it ends), so an event
-- on time calls no function.
CREATE OR REPLACE TRIGGER mark_rollups_on_insert
AFTER INSERT ON jobs
FOR EACH ROW
WHEN (NEW.created_at < clock_timestamp() - interval '1 day'
      OR NEW.completed_at < clock_timestamp() - interval '1 day')
EXECUTE FUNCTION mark_rollups_of_row();
