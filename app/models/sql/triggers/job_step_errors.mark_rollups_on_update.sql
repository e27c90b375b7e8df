-- Calls mark_rollups_of_row for each job_step_errors row changed with job_created_at over a day
-- old: only such a row can lie in a closed rollup period (closed a day after it ends), so an event
-- on time calls no function.
CREATE OR REPLACE TRIGGER mark_rollups_on_update
AFTER UPDATE ON job_step_errors
FOR EACH ROW
WHEN ((OLD.error_count IS DISTINCT FROM NEW.error_count
       OR OLD.step_completed IS DISTINCT FROM NEW.step_completed)
      AND (OLD.job_created_at < clock_timestamp() - interval '1 day'
       OR NEW.job_created_at < clock_timestamp() - interval '1 day'))
EXECUTE FUNCTION mark_rollups_of_row();
