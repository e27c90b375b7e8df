-- A batch of events for any jobs (POST /events/batch, the seed), in one statement: `events` is
-- a JSON array of objects as apply_event takes them, each naming its job by job_id or
-- provider_job_id. Locks the jobs in id order (two calls cannot deadlock), applies each job's
-- events in the order sent (record_event), then writes each job's row once (settle_job): as if
-- the events had come one by one. Answers one row per event, in the order sent (`item`, the
-- event's place in the array, from 1).
CREATE OR REPLACE FUNCTION apply_events(events jsonb, visible_customer_id bigint)
RETURNS TABLE (item integer, outcome text, event_id bigint, job_id bigint, problem text,
               detail text)
LANGUAGE plpgsql
-- Each statement below, and in the functions it calls, has one good plan whatever its
-- parameters (lookups by key): without this, PL/pgSQL may plan some of them again at every
-- execution, which cost a batch a fifth of its time.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    sent record;
    job jobs;                     -- the job of the events at hand, as they leave it
    job_changed boolean := false; -- whether any of them was stored
    reported events;
    recorded record;
    -- The answers, by item: the events are worked through job by job.
    sent_count integer := jsonb_array_length(events);
    outcomes text[] := array_fill(NULL::text, ARRAY[sent_count]);
    event_ids bigint[] := array_fill(NULL::bigint, ARRAY[sent_count]);
    job_ids bigint[] := array_fill(NULL::bigint, ARRAY[sent_count]);
    problems text[] := array_fill(NULL::text, ARRAY[sent_count]);
    details text[] := array_fill(NULL::text, ARRAY[sent_count]);
BEGIN
    FOR sent IN
        WITH named AS (
            SELECT e.ordinality::integer AS item,
                e.value AS event,
                coalesce(
                    (e.value->>'job_id')::bigint,
                    (SELECT j.id FROM jobs j WHERE j.provider_job_id = e.value->>'provider_job_id')
                ) AS job_id
            FROM jsonb_array_elements(events) WITH ORDINALITY AS e
        ), locked AS (
            SELECT j
            FROM jobs j
            WHERE j.id IN (SELECT named.job_id FROM named)
              AND (visible_customer_id IS NULL OR j.customer_id = visible_customer_id)
            ORDER BY j.id
            FOR NO KEY UPDATE  -- as apply_event locks a job
        )
        SELECT named.item, named.event, locked.j AS job, s AS step
        FROM named
        LEFT JOIN locked ON (locked.j).id = named.job_id
        LEFT JOIN job_configuration_steps s ON s.configuration_id = (locked.j).configuration_id
            AND s.tag = named.event->>'name'
        ORDER BY (locked.j).id, named.item
    LOOP
        IF (sent.job).id IS DISTINCT FROM job.id THEN
            IF job_changed THEN
                PERFORM settle_job(job);
            END IF;
            job := sent.job;
            job_changed := false;
        END IF;

        IF job.id IS NULL THEN
            outcomes[sent.item] := 'rejected';
            problems[sent.item] := 'not_found';
            details[sent.item] := coalesce(sent.event->>'job_id', sent.event->>'provider_job_id');
        ELSE
            reported := jsonb_populate_record(NULL::events, sent.event);
            reported.job_id := job.id;
            reported.step_tag := sent.event->>'name';
            reported.received_at := coalesce(reported.received_at, now());
            recorded := record_event(job, reported, sent.step);
            job := recorded.job;
            job_changed := job_changed OR recorded.outcome = 'created';
            outcomes[sent.item] := recorded.outcome;
            event_ids[sent.item] := (recorded.stored).id;
            job_ids[sent.item] := job.id;
            problems[sent.item] := recorded.problem;
            details[sent.item] := recorded.detail;
        END IF;
    END LOOP;

    IF job_changed THEN
        PERFORM settle_job(job);
    END IF;

    RETURN QUERY
        SELECT answer.item::integer, answer.outcome, answer.event_id, answer.job_id,
            answer.problem, answer.detail
        FROM unnest(outcomes, event_ids, job_ids, problems, details)
            WITH ORDINALITY AS answer(outcome, event_id, job_id, problem, detail, item)
        ORDER BY answer.item;
END
$$;
