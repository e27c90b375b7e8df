-- Writes a job's row once its new events are recorded (record_event): counters, times, status
-- (job_status) and deadline (job_deadline); queues the notifications of a job that has just
-- completed or failed (enqueue_webhooks). Called by apply_event and apply_events, once per job
-- and call; `job` is the row as locked, with the counters its events changed, and still its old
-- status. Answers the row as written.
CREATE OR REPLACE FUNCTION settle_job(job jobs) RETURNS jobs
LANGUAGE plpgsql AS $$
DECLARE
    new_status job_status := job_status(
        false, job.unresolved_error_count, job.steps_completed, job.step_count, job.event_count);
    settled jobs;
BEGIN
    UPDATE jobs j
    SET event_count = job.event_count,
        error_count = job.error_count,
        unresolved_error_count = job.unresolved_error_count,
        steps_completed = job.steps_completed,
        completed_points = job.completed_points,
        cost = job.cost,
        started_at = job.started_at,
        last_event_at = job.last_event_at,
        updated_at = job.updated_at,
        last_step_completed_at = job.last_step_completed_at,
        -- Completed when its last step was, by the steps' (earliest) completion times.
        completed_at = CASE WHEN job.steps_completed = job.step_count
                            THEN job.last_step_completed_at
                            ELSE j.completed_at END,
        status = new_status,
        deadline_at = job_deadline(
            job.id, job.configuration_id, new_status, job.created_at, job.last_event_at)
    WHERE j.id = job.id
    RETURNING j.*
    INTO settled;

    IF new_status IS DISTINCT FROM job.status AND new_status IN ('completed', 'failed') THEN
        PERFORM enqueue_webhooks(ARRAY[job.id], 'job.' || new_status, now());
    END IF;
    RETURN settled;
END
$$;
