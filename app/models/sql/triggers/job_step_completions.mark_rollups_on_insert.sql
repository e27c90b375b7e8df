-- Calls mark_rollups_of_row for each job_step_completions row inserted with completed_at or
-- job_created_at over a day old: only such a row can lie in a closed rollup period (closed a day
-- after it ends), so an event on time calls no function.
CREATE OR REPLACE TRIGGER mark_rollups_on_insert
AFTER INSERT ON job_step_completions
FOR EACH ROW
WHEN (NEW.completed_at < clock_timestamp() - interval '1 day'
      OR NEW.job_created_at < clock_timestamp() - interval '1 day')
EXECUTE FUNCTION mark_rollups_of_row();
