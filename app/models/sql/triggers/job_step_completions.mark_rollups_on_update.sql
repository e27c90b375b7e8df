-- Calls mark_rollups_of_row for each job_step_completions row changed with completed_at or
-- job_created_at over a day old: only such a row can lie in a closed rollup period (closed a day
-- after it ends), so an event on time calls no function.
CREATE OR REPLACE TRIGGER mark_rollups_on_update
AFTER UPDATE ON job_step_completions
FOR EACH ROW
WHEN ((OLD.completed_at IS DISTINCT FROM NEW.completed_at
       OR OLD.seconds_bucket IS DISTINCT FROM NEW.seconds_bucket)
      AND (OLD.completed_at < clock_timestamp() - interval '1 day'
       OR OLD.job_created_at < clock_timestamp() - interval '1 day'
       OR NEW.completed_at < clock_timestamp() - interval '1 day'
       OR NEW.job_created_at < clock_timestamp() - interval '1 day'))
EXECUTE FUNCTION mark_rollups_of_row();
