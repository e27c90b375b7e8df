-- Calls mark_rollups_of_row for each jobs row changed with created_at or completed_at over a day
-- old: only such a row can lie in a closed rollup period (closed a day after it ends), so an event
-- on time calls no function.
CREATE OR REPLACE TRIGGER mark_rollups_on_update
AFTER UPDATE ON jobs
FOR EACH ROW
WHEN ((OLD.created_at IS DISTINCT FROM NEW.created_at
       OR OLD.completed_at IS DISTINCT FROM NEW.completed_at
       OR OLD.customer_id IS DISTINCT FROM NEW.customer_id
       OR OLD.configuration_id IS DISTINCT FROM NEW.configuration_id)
      AND (OLD.created_at < clock_timestamp() - interval '1 day'
       OR OLD.completed_at < clock_timestamp() - interval '1 day'
       OR NEW.created_at < clock_timestamp() - interval '1 day'
       OR NEW.completed_at < clock_timestamp() - interval '1 day'))
EXECUTE FUNCTION mark_rollups_of_row();
