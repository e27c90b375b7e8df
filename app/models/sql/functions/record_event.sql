-- The job contract for one event of one job: stores it (or answers the stored event it
-- replays, or why it is refused), with the step's completion, the errors it resolves and the
-- per-step error counts. Called by apply_event and apply_events, for each event in order, with
-- the job locked; `job` comes in as the earlier events left it and goes out as this one leaves
-- it, in memory only: this function never writes the jobs row (settle_job does, once a call).
CREATE OR REPLACE FUNCTION record_event(
    INOUT job jobs,
    reported events,       -- the event as sent: kind, step_tag, event_id, occurred_at,
                           -- received_at, message, metadata
    step job_configuration_steps,  -- the step of the job's version that step_tag names, if any
    OUT outcome text,      -- created, duplicate or rejected
    OUT problem text,      -- why it was rejected: cancelled or unknown_step
    OUT detail text,       -- for unknown_step, the job's valid step tags
    OUT stored events      -- the stored event: the new one, or the one a replay names
)
LANGUAGE plpgsql AS $$
DECLARE
    reported_at timestamptz := coalesce(reported.occurred_at, reported.received_at);
    -- The step's completion: new (true), moved earlier (false), or unchanged (NULL).
    completion_is_new boolean;
    comes_last boolean;
    resolved integer;
BEGIN
    IF job.status = 'cancelled' OR (reported.step_tag IS NOT NULL AND step.id IS NULL) THEN
        -- Refused, unless it replays an event the job has: a replay answers what was stored.
        SELECT *
        INTO stored
        FROM events e
        WHERE e.job_id = job.id
          AND e.event_id = reported.event_id;
        IF FOUND THEN
            outcome := 'duplicate';
        ELSIF job.status = 'cancelled' THEN
            outcome := 'rejected';
            problem := 'cancelled';
        ELSE
            outcome := 'rejected';
            problem := 'unknown_step';
            SELECT string_agg(s.tag, ', ' ORDER BY s.position)
            INTO detail
            FROM job_configuration_steps s
            WHERE s.configuration_id = job.configuration_id;
        END IF;
        RETURN;
    END IF;

    -- A refused event stored nothing, so its event_id stays free for a later one.
    INSERT INTO events AS e (
        job_id, kind, step_id, step_tag, event_id, message, metadata, occurred_at, received_at)
    VALUES (
        job.id, reported.kind, step.id, reported.step_tag, reported.event_id, reported.message,
        reported.metadata, reported.occurred_at, reported.received_at)
    ON CONFLICT (job_id, event_id) DO NOTHING
    RETURNING *
    INTO stored;
    IF NOT FOUND THEN
        SELECT *
        INTO stored
        FROM events e
        WHERE e.job_id = job.id
          AND e.event_id = reported.event_id;
        outcome := 'duplicate';
        RETURN;
    END IF;

    outcome := 'created';
    job.event_count := job.event_count + 1;
    job.started_at := coalesce(job.started_at, reported.received_at);
    job.last_event_at := reported.received_at;
    job.updated_at := reported.received_at;

    IF reported.kind = 'step' THEN
        -- Each step counts once, at the earliest time reported for it, timed from the job's
        -- previous completion (or its creation) for the funnel.
        INSERT INTO job_step_completions AS done (
            job_id, step_id, customer_id, configuration_id, event_id, completed_at, points, cost,
            job_created_at, seconds_since_previous)
        VALUES (
            job.id, step.id, job.customer_id, job.configuration_id, stored.id, reported_at,
            step.points, step.cost, job.created_at,
            extract(epoch FROM reported_at - coalesce(job.last_step_completed_at, job.created_at)))
        ON CONFLICT (job_id, step_id) DO UPDATE
            SET completed_at = excluded.completed_at,
                event_id = excluded.event_id
            WHERE excluded.completed_at < done.completed_at
        RETURNING done.xmax = 0
        INTO completion_is_new;

        IF completion_is_new THEN
            job.steps_completed := job.steps_completed + 1;
            job.completed_points := job.completed_points + step.points;
            job.cost := job.cost + step.cost;
            IF job.error_count > 0 THEN
                UPDATE job_step_errors counted
                SET step_completed = true
                WHERE counted.job_id = job.id
                  AND counted.step_id = step.id
                  AND NOT counted.step_completed;
            END IF;
        END IF;

        -- Completions are chained by time, then step: a new one that comes last in the chain
        -- (the usual case, the events of a batch received at the same moment included) was
        -- timed right above; any other change makes the job's chain again.
        IF completion_is_new IS NOT NULL THEN
            comes_last := completion_is_new AND (
                job.last_step_completed_at IS NULL OR reported_at > job.last_step_completed_at);
            IF completion_is_new AND reported_at = job.last_step_completed_at THEN
                -- A tie: last unless a later step has that time too. All the job's completions
                -- by the primary key, whatever the statistics say: OFFSET 0 keeps the time out
                -- of the scan (an index on it would read every completion of a batch, which all
                -- have that time).
                comes_last := step.id = (
                    SELECT max(done.step_id)
                    FROM (
                        SELECT c.step_id, c.completed_at
                        FROM job_step_completions c
                        WHERE c.job_id = job.id
                        OFFSET 0
                    ) done
                    WHERE done.completed_at = reported_at);
            END IF;
        END IF;
        IF comes_last THEN
            job.last_step_completed_at := reported_at;
        ELSIF completion_is_new IS NOT NULL THEN
            UPDATE job_step_completions done
            SET seconds_since_previous = timed.seconds
            FROM (
                SELECT c.step_id,
                    extract(epoch FROM c.completed_at - coalesce(
                        lag(c.completed_at) OVER (ORDER BY c.completed_at, c.step_id),
                        c.job_created_at))::double precision AS seconds
                FROM job_step_completions c
                WHERE c.job_id = job.id
            ) timed
            WHERE done.job_id = job.id
              AND done.step_id = timed.step_id
              AND done.seconds_since_previous IS DISTINCT FROM timed.seconds;
            job.last_step_completed_at := (
                SELECT max(c.completed_at) FROM job_step_completions c WHERE c.job_id = job.id);
        END IF;

        IF job.unresolved_error_count > 0 THEN
            -- A step that succeeds resolves the open errors at that step; once every step is
            -- complete, it resolves those that name no step too.
            UPDATE events e
            SET resolved_at = reported.received_at
            WHERE e.job_id = job.id
              AND e.kind = 'error'
              AND e.resolved_at IS NULL
              AND (e.step_id = step.id
                   OR e.step_id IS NULL AND job.steps_completed = job.step_count);
            GET DIAGNOSTICS resolved = ROW_COUNT;
            job.unresolved_error_count := job.unresolved_error_count - resolved;
        END IF;

    ELSIF reported.kind = 'error' THEN
        -- Open until a later step event resolves it.
        job.error_count := job.error_count + 1;
        job.unresolved_error_count := job.unresolved_error_count + 1;
        IF step.id IS NOT NULL THEN
            INSERT INTO job_step_errors AS counted (
                job_id, step_id, customer_id, configuration_id, error_count, first_error_at,
                last_error_at, job_created_at, step_completed)
            VALUES (
                job.id, step.id, job.customer_id, job.configuration_id, 1, reported_at,
                reported_at, job.created_at,
                EXISTS (SELECT 1 FROM job_step_completions c
                        WHERE c.job_id = job.id AND c.step_id = step.id))
            ON CONFLICT (job_id, step_id) DO UPDATE
                SET error_count = counted.error_count + 1,
                    first_error_at = least(counted.first_error_at, excluded.first_error_at),
                    last_error_at = greatest(counted.last_error_at, excluded.last_error_at),
                    step_completed = excluded.step_completed;
        END IF;
    END IF;
END
$$;
