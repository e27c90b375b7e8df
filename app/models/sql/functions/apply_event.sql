-- A single event (POST /jobs/{id}/events), in one statement: `event` is a JSON object
-- {job_id, kind, name, event_id, occurred_at, message, metadata, received_at}; received_at is
-- for replaying history, the API leaves it out and gets now(). Locks the job, applies the
-- contract (record_event, settle_job), and answers the outcome with the stored event and the
-- job as they now are. A job not of `visible_customer_id` (when given) is not found.
CREATE OR REPLACE FUNCTION apply_event(event jsonb, visible_customer_id bigint)
RETURNS TABLE (
    outcome text, problem text, detail text,
    event_id bigint, event_kind event_kind, event_name text, event_key text,
    event_message text, event_metadata jsonb, event_occurred_at timestamptz,
    event_received_at timestamptz, event_resolved_at timestamptz,
    job_id bigint, provider_job_id text, customer_id bigint, configuration_id bigint,
    tag text, version integer, job_metadata jsonb, status job_status, progress numeric,
    completed_points bigint, total_points bigint, steps_completed integer, step_count integer,
    cost numeric, event_count integer, error_count integer, unresolved_error_count integer,
    created_at timestamptz, updated_at timestamptz, started_at timestamptz,
    last_event_at timestamptz, completed_at timestamptz, cancelled_at timestamptz,
    deadline_at timestamptz)
LANGUAGE plpgsql
-- Each statement below, and in the functions it calls, has one good plan whatever its
-- parameters (lookups by key): without this, PL/pgSQL may plan some of them again at every
-- execution, which cost a batch a fifth of its time.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    reported events := jsonb_populate_record(NULL::events, event);
    job jobs;
    step job_configuration_steps;
    recorded record;
BEGIN
    reported.step_tag := event->>'name';
    reported.received_at := coalesce(reported.received_at, now());

    SELECT *
    INTO job
    FROM jobs j
    WHERE j.id = reported.job_id
      AND (visible_customer_id IS NULL OR j.customer_id = visible_customer_id)
    -- The lock an UPDATE of the job takes anyway: events of one job wait for each other, while
    -- another transaction's foreign key checks of rows naming the job need not wait.
    FOR NO KEY UPDATE;

    IF NOT FOUND THEN
        SELECT 'rejected' AS outcome, 'not_found' AS problem, event->>'job_id' AS detail,
            NULL::events AS stored
        INTO recorded;
    ELSE
        SELECT *
        INTO step
        FROM job_configuration_steps s
        WHERE s.configuration_id = job.configuration_id
          AND s.tag = reported.step_tag;
        recorded := record_event(job, reported, step);
        IF recorded.outcome = 'created' THEN
            job := settle_job(recorded.job);
        END IF;
    END IF;

    RETURN QUERY
        SELECT recorded.outcome, recorded.problem, recorded.detail,
            (recorded.stored).id, (recorded.stored).kind, (recorded.stored).step_tag::text,
            (recorded.stored).event_id::text, (recorded.stored).message,
            (recorded.stored).metadata, (recorded.stored).occurred_at,
            (recorded.stored).received_at, (recorded.stored).resolved_at,
            job.id, job.provider_job_id::text, job.customer_id, job.configuration_id,
            c.tag::text, c.version, job.metadata, job.status, job.progress,
            job.completed_points, job.total_points, job.steps_completed, job.step_count,
            job.cost, job.event_count, job.error_count, job.unresolved_error_count,
            job.created_at, job.updated_at, job.started_at, job.last_event_at,
            job.completed_at, job.cancelled_at, job.deadline_at
        FROM (SELECT 1) AS one
        LEFT JOIN job_configurations c ON c.id = job.configuration_id;
END
$$;
