"""The job contract event by event

`apply_event` and `apply_events` no longer run the set-based batch machinery (arrays of
composite rows, window functions, several passes over them) for every call: both apply each
event with `record_event` (the contract for one event: the stored event, the step's completion
and its timing, the errors it resolves, the per-step error counts) and then write each job's
row once with `settle_job` (counters, status, deadline, notifications). Their signatures and
answers are unchanged, so the release before this one keeps working against it. `job_deadline`
and `enqueue_webhooks` become PL/pgSQL, whose plans a session keeps, where a SQL function called
from a statement is planned again at each execution; both calls force generic plans, which
PL/pgSQL would otherwise make again for some statements at every event. The type
`event_to_apply`, which only the old `apply_events` used, goes.

The texts below are copies of app/models/sql/functions/*.sql as this migration made them, and,
for downgrade(), the definitions they replace.

Revision ID: a1f4c7e2b9d3
Revises: e7a4c9d2b816
Create Date: 2026-12-07 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a1f4c7e2b9d3"
down_revision: str | None = "e7a4c9d2b816"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_DEADLINE = r"""
-- The deadline rule: the earliest deadline that applies to a job with this (new) status:
-- job_timeout from creation; start_timeout from creation while no event came; else, from the
-- last event, step_timeout or the learnt wait of the first step (by position) not yet complete.
-- NULL for a finished job. Called by settle_job for every job whose events were stored, and by
-- job creation. PL/pgSQL, so that a session plans its queries once, not at every call.
CREATE OR REPLACE FUNCTION job_deadline(
    for_job bigint,
    of_configuration bigint,
    new_status job_status,
    created timestamptz,
    last_event timestamptz
) RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    configuration job_configurations;
    step_wait double precision;
BEGIN
    IF new_status NOT IN ('pending', 'running') THEN
        RETURN NULL;
    END IF;
    SELECT *
    INTO configuration
    FROM job_configurations c
    WHERE c.id = of_configuration;

    IF last_event IS NULL THEN
        RETURN least(created + make_interval(secs => configuration.job_timeout),
                     created + make_interval(secs => configuration.start_timeout));
    END IF;

    step_wait := configuration.step_timeout;
    -- One probe when the version has learnt nothing yet (no history).
    IF step_wait IS NULL AND EXISTS (
        SELECT 1
        FROM job_step_timings learnt
        WHERE learnt.configuration_id = of_configuration
          AND learnt.wait_seconds IS NOT NULL
    ) THEN
        SELECT timing.wait_seconds
        INTO step_wait
        FROM job_configuration_steps s
        LEFT JOIN job_step_timings timing ON timing.step_id = s.id
        WHERE s.configuration_id = of_configuration
          AND NOT EXISTS (SELECT 1
                          FROM job_step_completions done
                          WHERE done.job_id = for_job
                            AND done.step_id = s.id)
        ORDER BY s.position
        LIMIT 1;
    END IF;
    RETURN least(created + make_interval(secs => configuration.job_timeout),
                 last_event + make_interval(secs => step_wait));
END
$$;
"""

ENQUEUE_WEBHOOKS = r"""
-- The notification rule: queues one outbox row per job and enabled endpoint that asked for the
-- event type (the endpoints of the job's customer, and those for every customer), in the
-- caller's transaction; answers how many. Called by settle_job (job.completed, job.failed), the
-- deadline sweep (job.stalled) and cancellation (job.cancelled). Never delivers anything itself.
CREATE OR REPLACE FUNCTION enqueue_webhooks(job_ids bigint[], of_type text, at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
BEGIN
    INSERT INTO webhook_deliveries (
        endpoint_id, message_id, event_type, job_id, next_attempt_at, created_at)
    SELECT e.id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), of_type, j.id, at, at
    FROM jobs j
    JOIN webhook_endpoints e ON (e.customer_id = j.customer_id OR e.customer_id IS NULL)
        AND e.enabled
        AND of_type = ANY(e.event_types)
    WHERE j.id = ANY(job_ids)
    ORDER BY j.id, e.id;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
"""

RECORD_EVENT = r"""
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
"""

SETTLE_JOB = r"""
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
"""

APPLY_EVENT = r"""
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
"""

APPLY_EVENTS = r"""
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
"""

# What downgrade() restores.

PREVIOUS_EVENT_TO_APPLY = r"""
CREATE TYPE event_to_apply AS (
    item integer,               -- its place in the call, from 1
    job_id bigint,              -- its job, once found (NULL: not found, or not visible)
    reference text,             -- the job as the caller named it, for "not found"
    kind event_kind,
    name text,
    step_id bigint,             -- the step `name` names in the job's version
    points integer,
    cost numeric,
    event_key text,             -- the caller's event_id (idempotency key)
    occurred_at timestamptz,
    received_at timestamptz,
    message text,
    metadata jsonb,
    outcome text,               -- created, duplicate, rejected; or repeat (of first_use)
    problem text,               -- why rejected: not_found, cancelled or unknown_step
    detail text,                -- the reference, or the valid step tags
    row_id bigint,              -- the stored event's id: the new one, or the replayed one
    first_use integer,          -- the first item of this job and event_key to be created
    first_completion boolean,   -- a step event that completes its step for the first time
    completes_job boolean,      -- a step event after which every step is complete
    resolver integer            -- a new error: the item of this call that resolves it
)
"""

PREVIOUS_JOB_DEADLINE = r"""
CREATE OR REPLACE FUNCTION job_deadline(
    for_job bigint,
    of_configuration bigint,
    new_status job_status,
    created timestamptz,
    last_event timestamptz
) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN new_status IN ('pending', 'running') THEN least(
        created + make_interval(secs => c.job_timeout),
        CASE WHEN last_event IS NULL THEN created + make_interval(secs => c.start_timeout)
             ELSE last_event + make_interval(secs => coalesce(c.step_timeout, CASE
                 -- One probe when the version has learnt nothing yet (no history).
                 WHEN EXISTS (SELECT 1 FROM job_step_timings learnt
                              WHERE learnt.configuration_id = c.id
                                AND learnt.wait_seconds IS NOT NULL)
                 THEN (SELECT timing.wait_seconds
                       FROM job_configuration_steps s
                       LEFT JOIN job_step_timings timing ON timing.step_id = s.id
                       WHERE s.configuration_id = c.id
                         AND NOT EXISTS (SELECT 1 FROM job_step_completions done
                                         WHERE done.job_id = for_job AND done.step_id = s.id)
                       ORDER BY s.position
                       LIMIT 1)
             END))
        END) END
    FROM job_configurations c WHERE c.id = of_configuration
$$
"""

PREVIOUS_ENQUEUE_WEBHOOKS = r"""
CREATE OR REPLACE FUNCTION enqueue_webhooks(job_ids bigint[], of_type text, at timestamptz)
RETURNS integer LANGUAGE sql AS $$
    -- One outbox row per job and enabled endpoint that asked for this event type: the
    -- endpoints of the job's customer, and those for every customer.
    WITH queued AS (
        INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, job_id,
                                        next_attempt_at, created_at)
        SELECT e.id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), of_type, j.id, at, at
        FROM jobs j
        JOIN webhook_endpoints e ON (e.customer_id = j.customer_id OR e.customer_id IS NULL)
            AND e.enabled AND of_type = ANY(e.event_types)
        WHERE j.id = ANY(job_ids)
        ORDER BY j.id, e.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM queued
$$
"""

PREVIOUS_APPLY_EVENTS = r"""
CREATE OR REPLACE FUNCTION apply_events(events jsonb, visible_customer_id bigint)
RETURNS TABLE (item integer, outcome text, event_id bigint, job_id bigint, problem text,
               detail text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
-- The job contract. `events` is a JSON array of objects {job_id or provider_job_id, kind, name,
-- event_id, occurred_at, message, metadata, received_at}; received_at is for replaying history
-- (the seed), the API leaves it out and gets now(). The events are applied in array order, as
-- if one by one, to jobs locked until the transaction ends:
--
-- * a job that is not found (or not of `visible_customer_id`, when given) rejects its events;
-- * an event_id the job already has, stored or earlier in the call, answers that event and
--   changes nothing, even where the event would now be refused (a refused event stores
--   nothing, so its event_id remains free);
-- * a cancelled job, or a name that is not a step of the job's version, rejects the event;
-- * progress and cost count each step once; a step's completion time is the earliest
--   (occurred_at, else received_at) reported, whatever the order of arrival;
-- * an error makes the job failed while unresolved; a later step event for its step resolves
--   it; an error naming no step is resolved by a step event once every step is complete;
-- * job_step_completions keeps each step's completion, with the seconds since the job's
--   previous completion (by time, then step) for the funnel; job_step_errors counts the
--   errors that name a step, and whether that step was completed too.
--
-- * every job an event is stored for gets its deadline again (`job_deadline`), info
--   events included (heartbeats); a stalled job's status is worked out afresh;
-- * a job that becomes completed or failed gets its webhook notifications queued
--   (`enqueue_webhooks`), in this transaction.
--
-- Answers one row per event: created, duplicate (event_id: the stored one) or rejected
-- (problem and detail say why).
DECLARE
    todo event_to_apply[];
    ids bigint[];
    refs text[];
    locked bigint[];
    resolved_before bigint[];
    retime bigint[];
    completed_jobs bigint[];
    failed_jobs bigint[];
BEGIN
    SELECT array_agg((e->>'job_id')::bigint), array_agg(e->>'provider_job_id')
    INTO ids, refs FROM jsonb_array_elements(events) AS e;

    -- In id order, so that two calls touching the same jobs cannot deadlock.
    SELECT array_agg(j.id) INTO locked FROM (
        SELECT j.id FROM jobs j
        WHERE (j.id = ANY(ids) OR j.provider_job_id = ANY(refs))
          AND (visible_customer_id IS NULL OR j.customer_id = visible_customer_id)
        ORDER BY j.id
        FOR UPDATE
    ) j;

    -- 1. Each event on its own: its job and step, a stored event with its event_id, refusals.
    SELECT array_agg(ROW(
        e.item, j.id, coalesce(e.job_id::text, e.provider_job_id), e.kind, e.name, s.id,
        s.points, s.cost, e.event_id, e.occurred_at, coalesce(e.received_at, now()), e.message,
        e.metadata,
        CASE WHEN j.id IS NULL THEN 'rejected'
             WHEN stored.id IS NOT NULL THEN 'duplicate'
             WHEN j.status = 'cancelled' OR (e.name IS NOT NULL AND s.id IS NULL)
             THEN 'rejected'
             ELSE 'created' END,
        CASE WHEN j.id IS NULL THEN 'not_found'
             WHEN stored.id IS NOT NULL THEN NULL
             WHEN j.status = 'cancelled' THEN 'cancelled'
             WHEN e.name IS NOT NULL AND s.id IS NULL THEN 'unknown_step' END,
        CASE WHEN j.id IS NULL THEN coalesce(e.job_id::text, e.provider_job_id)
             WHEN stored.id IS NULL AND j.status <> 'cancelled' AND e.name IS NOT NULL
                  AND s.id IS NULL
             THEN (SELECT string_agg(valid.tag, ', ' ORDER BY valid.position)
                   FROM job_configuration_steps valid
                   WHERE valid.configuration_id = j.configuration_id) END,
        stored.id, e.item, false, false, NULL
    )::event_to_apply ORDER BY e.item) INTO todo
    FROM (
        SELECT e.*, coalesce(e.job_id, (SELECT named.id FROM jobs named
                                        WHERE named.provider_job_id = e.provider_job_id))
                    AS named_job_id
        FROM ROWS FROM (jsonb_to_recordset(events) AS (
            job_id bigint, provider_job_id text, kind event_kind, name text, event_id text,
            occurred_at timestamptz, received_at timestamptz, message text, metadata jsonb
        )) WITH ORDINALITY AS e(job_id, provider_job_id, kind, name, event_id, occurred_at,
                               received_at, message, metadata, item)
    ) e
    LEFT JOIN jobs j ON j.id = e.named_job_id AND j.id = ANY(locked)
    LEFT JOIN job_configuration_steps s ON s.configuration_id = j.configuration_id
        AND s.tag = e.name
    LEFT JOIN events stored ON stored.job_id = j.id AND stored.event_id = e.event_id;

    -- 2. In arrival order: a repeated event_id within the call is a repeat of its first use;
    -- new events get their ids; step events learn whether they complete their step for the
    -- first time, and whether every step is then complete.
    SELECT array_agg(ROW(
        c.item, c.job_id, c.reference, c.kind, c.name, c.step_id, c.points, c.cost, c.event_key,
        c.occurred_at, c.received_at, c.message, c.metadata, c.outcome, c.problem, c.detail,
        c.row_id, c.first_use, c.first_completion,
        c.outcome = 'created' AND c.kind = 'step' AND c.steps_done = c.step_count, NULL
    )::event_to_apply ORDER BY c.item) INTO todo
    FROM (
        SELECT b.*, j.step_count, j.steps_completed + count(*) FILTER (
            WHERE b.first_completion) OVER (PARTITION BY b.job_id ORDER BY b.item) AS steps_done
        FROM (
            SELECT a.item, a.job_id, a.reference, a.kind, a.name, a.step_id, a.points, a.cost,
                a.event_key, a.occurred_at, a.received_at, a.message, a.metadata,
                a.outcome, a.problem, a.detail,
                CASE WHEN a.outcome = 'created'
                     THEN nextval(pg_get_serial_sequence('events', 'id'))
                     ELSE a.row_id END AS row_id,
                a.first_use,
                a.outcome = 'created' AND a.kind = 'step'
                    AND row_number() OVER (
                        PARTITION BY a.job_id, a.step_id, a.outcome = 'created' AND a.kind = 'step'
                        ORDER BY a.item) = 1
                    AND NOT EXISTS (
                        SELECT 1 FROM job_step_completions done
                        WHERE done.job_id = a.job_id AND done.step_id = a.step_id)
                    AS first_completion
            FROM (
                SELECT f.item, f.job_id, f.reference, f.kind, f.name, f.step_id, f.points,
                    f.cost, f.event_key, f.occurred_at, f.received_at, f.message, f.metadata,
                    CASE WHEN f.first_use < f.item THEN 'repeat' ELSE f.outcome END AS outcome,
                    CASE WHEN f.first_use < f.item THEN NULL ELSE f.problem END AS problem,
                    CASE WHEN f.first_use < f.item THEN NULL ELSE f.detail END AS detail,
                    f.row_id, f.first_use
                FROM (
                    -- A refused event stores nothing, so its event_id stays free for later
                    -- ones: the first use of a key is its first event to be created.
                    SELECT u.item, u.job_id, u.reference, u.kind, u.name, u.step_id, u.points,
                        u.cost, u.event_key, u.occurred_at, u.received_at, u.message,
                        u.metadata, u.outcome, u.problem, u.detail, u.row_id,
                        CASE WHEN u.job_id IS NULL OR u.event_key IS NULL THEN u.item
                             ELSE coalesce(min(u.item) FILTER (WHERE u.outcome = 'created')
                                 OVER (PARTITION BY u.job_id, u.event_key), u.item)
                        END AS first_use
                    FROM unnest(todo) AS u
                ) f
            ) a
            ORDER BY a.item  -- so that the ids follow the arrival order
        ) b
        LEFT JOIN jobs j ON j.id = b.job_id
    ) c;

    -- 3. Which later event of the call resolves each new error, if any.
    SELECT array_agg(ROW(
        r.item, r.job_id, r.reference, r.kind, r.name, r.step_id, r.points, r.cost, r.event_key,
        r.occurred_at, r.received_at, r.message, r.metadata, r.outcome, r.problem, r.detail,
        r.row_id, r.first_use, r.first_completion, r.completes_job,
        CASE WHEN r.outcome <> 'created' OR r.kind <> 'error' THEN NULL
             WHEN r.step_id IS NOT NULL THEN r.next_step_event
             ELSE r.next_completing_event END
    )::event_to_apply ORDER BY r.item) INTO todo
    FROM (
        SELECT t.*,
            min(t.item) FILTER (WHERE t.outcome = 'created' AND t.kind = 'step') OVER (
                PARTITION BY t.job_id, t.step_id ORDER BY t.item
                ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_step_event,
            min(t.item) FILTER (WHERE t.completes_job) OVER (
                PARTITION BY t.job_id ORDER BY t.item
                ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_completing_event
        FROM unnest(todo) AS t
    ) r;

    IF EXISTS (SELECT 1 FROM unnest(todo) AS a WHERE a.outcome = 'created') THEN
        -- 4. The open errors stored before this call that its step events resolve, at the
        -- time of the first event that does.
        WITH resolving AS (
            SELECT a.job_id, a.step_id, min(a.item) AS first_item
            FROM unnest(todo) AS a WHERE a.outcome = 'created' AND a.kind = 'step'
            GROUP BY a.job_id, a.step_id
            UNION ALL
            SELECT a.job_id, NULL, min(a.item)
            FROM unnest(todo) AS a WHERE a.completes_job
            GROUP BY a.job_id
        ), resolved AS (
            UPDATE events ev SET resolved_at = (todo[resolving.first_item]).received_at
            FROM resolving
            WHERE ev.job_id = resolving.job_id
              AND ev.step_id IS NOT DISTINCT FROM resolving.step_id
              AND ev.kind = 'error' AND ev.resolved_at IS NULL
            RETURNING ev.job_id
        )
        SELECT array_agg(resolved.job_id) INTO resolved_before FROM resolved;

        INSERT INTO events (id, job_id, kind, step_id, step_tag, event_id, message, metadata,
                            occurred_at, received_at, resolved_at)
        SELECT a.row_id, a.job_id, a.kind, a.step_id,
               CASE WHEN a.step_id IS NOT NULL THEN a.name END,
               a.event_key, a.message, a.metadata, a.occurred_at, a.received_at,
               (todo[a.resolver]).received_at
        FROM unnest(todo) AS a WHERE a.outcome = 'created' ORDER BY a.item;

        -- 5. Step completions: the earliest time of each step, timed from the one before it
        -- (the first from the job's latest completion, or its creation). Where that chain may
        -- be wrong (a step arrived late, or moved earlier), the job's completions are timed
        -- again below.
        WITH earliest AS (
            SELECT DISTINCT ON (a.job_id, a.step_id) a.job_id, a.step_id, a.row_id,
                coalesce(a.occurred_at, a.received_at) AS completed_at, a.points, a.cost
            FROM unnest(todo) AS a WHERE a.outcome = 'created' AND a.kind = 'step'
            ORDER BY a.job_id, a.step_id, coalesce(a.occurred_at, a.received_at), a.item
        ), upserted AS (
            INSERT INTO job_step_completions AS done (
                job_id, step_id, customer_id, configuration_id, event_id, completed_at, points,
                cost, job_created_at, seconds_since_previous)
            SELECT e.job_id, e.step_id, j.customer_id, j.configuration_id, e.row_id,
                e.completed_at, e.points, e.cost, j.created_at,
                extract(epoch FROM e.completed_at - coalesce(
                    lag(e.completed_at) OVER (
                        PARTITION BY e.job_id ORDER BY e.completed_at, e.step_id),
                    j.last_step_completed_at, j.created_at))
            FROM earliest e JOIN jobs j ON j.id = e.job_id
            ORDER BY e.job_id, e.step_id
            ON CONFLICT (job_id, step_id) DO UPDATE
                SET completed_at = excluded.completed_at, event_id = excluded.event_id
                WHERE excluded.completed_at < done.completed_at
            RETURNING done.job_id, xmax = 0 AS inserted
        ), upserts AS (
            SELECT u.job_id, bool_or(NOT u.inserted) AS moved_earlier, bool_or(u.inserted) AS new
            FROM upserted u GROUP BY u.job_id
        ), steps AS (
            SELECT a.job_id, bool_or(NOT a.first_completion) AS repeated,
                min(coalesce(a.occurred_at, a.received_at)) FILTER (WHERE a.first_completion)
                    AS first_new_at
            FROM unnest(todo) AS a WHERE a.outcome = 'created' AND a.kind = 'step'
            GROUP BY a.job_id
        )
        SELECT array_agg(j.id) INTO retime
        FROM upserts JOIN steps ON steps.job_id = upserts.job_id
        JOIN jobs j ON j.id = upserts.job_id
        WHERE upserts.moved_earlier
           OR upserts.new AND (steps.repeated OR steps.first_new_at <= j.last_step_completed_at);

        IF retime IS NOT NULL THEN
            UPDATE job_step_completions done SET seconds_since_previous = timed.seconds
            FROM (
                SELECT c.job_id, c.step_id, extract(epoch FROM c.completed_at - coalesce(
                    lag(c.completed_at) OVER (
                        PARTITION BY c.job_id ORDER BY c.completed_at, c.step_id),
                    c.job_created_at))::double precision AS seconds
                FROM job_step_completions c WHERE c.job_id = ANY(retime)
            ) timed
            WHERE done.job_id = timed.job_id AND done.step_id = timed.step_id
              AND done.seconds_since_previous IS DISTINCT FROM timed.seconds;
        END IF;

        -- 6. The errors that name a step, counted per job and step.
        INSERT INTO job_step_errors AS counted (
            job_id, step_id, customer_id, configuration_id, error_count, first_error_at,
            last_error_at, job_created_at, step_completed)
        SELECT a.job_id, a.step_id, j.customer_id, j.configuration_id, count(*),
            min(coalesce(a.occurred_at, a.received_at)),
            max(coalesce(a.occurred_at, a.received_at)), j.created_at,
            EXISTS (SELECT 1 FROM job_step_completions done
                    WHERE done.job_id = a.job_id AND done.step_id = a.step_id)
        FROM unnest(todo) AS a JOIN jobs j ON j.id = a.job_id
        WHERE a.outcome = 'created' AND a.kind = 'error' AND a.step_id IS NOT NULL
        GROUP BY a.job_id, a.step_id, j.customer_id, j.configuration_id, j.created_at
        ORDER BY a.job_id, a.step_id
        ON CONFLICT (job_id, step_id) DO UPDATE SET
            error_count = counted.error_count + excluded.error_count,
            first_error_at = least(counted.first_error_at, excluded.first_error_at),
            last_error_at = greatest(counted.last_error_at, excluded.last_error_at),
            step_completed = excluded.step_completed;

        UPDATE job_step_errors counted SET step_completed = true
        FROM unnest(todo) AS a
        WHERE a.first_completion AND counted.job_id = a.job_id
          AND counted.step_id = a.step_id AND NOT counted.step_completed;

        -- 7. Each job's row, once: counters, times, status and deadline.
        WITH updated AS (
        UPDATE jobs j SET
            event_count = t.event_count,
            error_count = t.error_count,
            unresolved_error_count = t.unresolved_error_count,
            steps_completed = t.steps_completed,
            completed_points = t.completed_points,
            cost = t.cost,
            started_at = coalesce(j.started_at, t.first_received_at),
            last_event_at = t.last_received_at,
            updated_at = t.last_received_at,
            last_step_completed_at = t.last_step_completed_at,
            -- Completed when its last step was, by the steps' (earliest) completion times.
            completed_at = CASE WHEN t.steps_completed = j.step_count
                                THEN t.last_step_completed_at ELSE j.completed_at END,
            status = t.status,
            deadline_at = job_deadline(j.id, j.configuration_id, t.status, j.created_at,
                                       t.last_received_at)
        FROM (
          SELECT counted.*, job_status(false, counted.unresolved_error_count,
              counted.steps_completed, counted.step_count, counted.event_count)
              AS status
          FROM (
            SELECT old.id, old.step_count, old.status AS old_status,
                old.event_count + count(*) AS event_count,
                old.error_count + count(*) FILTER (WHERE a.kind = 'error') AS error_count,
                old.unresolved_error_count - coalesce(min(resolved.count), 0)
                    + count(*) FILTER (WHERE a.kind = 'error' AND a.resolver IS NULL)
                    AS unresolved_error_count,
                old.steps_completed + count(*) FILTER (WHERE a.first_completion)
                    AS steps_completed,
                old.completed_points + coalesce(sum(a.points) FILTER (
                    WHERE a.first_completion), 0) AS completed_points,
                old.cost + coalesce(sum(a.cost) FILTER (WHERE a.first_completion), 0) AS cost,
                min(a.received_at) AS first_received_at,
                max(a.received_at) AS last_received_at,
                CASE WHEN bool_or(a.kind = 'step')
                     THEN (SELECT max(done.completed_at) FROM job_step_completions done
                           WHERE done.job_id = old.id)
                     ELSE old.last_step_completed_at END AS last_step_completed_at
            FROM unnest(todo) AS a JOIN jobs old ON old.id = a.job_id
            LEFT JOIN (
                SELECT r.job_id, count(*) FROM unnest(resolved_before) AS r(job_id)
                GROUP BY r.job_id
            ) resolved ON resolved.job_id = old.id
            WHERE a.outcome = 'created'
            GROUP BY old.id
          ) counted
        ) t
        WHERE j.id = t.id
        RETURNING j.id, j.status, t.old_status
        )
        SELECT array_agg(u.id) FILTER (WHERE u.status = 'completed'),
               array_agg(u.id) FILTER (WHERE u.status = 'failed')
        INTO completed_jobs, failed_jobs
        FROM updated u WHERE u.status IS DISTINCT FROM u.old_status;

        -- 8. The notifications of the jobs that have just completed or failed.
        IF completed_jobs IS NOT NULL THEN
            PERFORM enqueue_webhooks(completed_jobs, 'job.completed', now());
        END IF;
        IF failed_jobs IS NOT NULL THEN
            PERFORM enqueue_webhooks(failed_jobs, 'job.failed', now());
        END IF;
    END IF;

    -- A repeat is a duplicate of the event its first use stored.
    RETURN QUERY
        SELECT a.item,
            CASE WHEN a.outcome = 'repeat' THEN 'duplicate' ELSE a.outcome END,
            CASE WHEN a.outcome = 'repeat' THEN (todo[a.first_use]).row_id ELSE a.row_id END,
            a.job_id, a.problem, a.detail
        FROM unnest(todo) AS a
        ORDER BY a.item;
END
$$
"""

PREVIOUS_APPLY_EVENT = r"""
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
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    applied record;
BEGIN
    SELECT * INTO applied FROM apply_events(jsonb_build_array(event), visible_customer_id);
    RETURN QUERY
        SELECT applied.outcome, applied.problem, applied.detail,
            ev.id, ev.kind, ev.step_tag::text, ev.event_id::text, ev.message, ev.metadata,
            ev.occurred_at, ev.received_at, ev.resolved_at,
            j.id, j.provider_job_id::text, j.customer_id, j.configuration_id, c.tag::text,
            c.version,
            j.metadata, j.status, j.progress, j.completed_points, j.total_points,
            j.steps_completed, j.step_count, j.cost, j.event_count, j.error_count,
            j.unresolved_error_count, j.created_at, j.updated_at, j.started_at,
            j.last_event_at, j.completed_at, j.cancelled_at, j.deadline_at
        FROM (SELECT 1) AS one
        LEFT JOIN events ev ON ev.id = applied.event_id
        LEFT JOIN jobs j ON j.id = applied.job_id
        LEFT JOIN job_configurations c ON c.id = j.configuration_id;
END
$$
"""


def upgrade() -> None:
    op.execute(JOB_DEADLINE)
    op.execute(ENQUEUE_WEBHOOKS)
    op.execute(RECORD_EVENT)
    op.execute(SETTLE_JOB)
    op.execute(APPLY_EVENT)
    op.execute(APPLY_EVENTS)
    op.execute("DROP TYPE event_to_apply")


def downgrade() -> None:
    op.execute(PREVIOUS_EVENT_TO_APPLY)
    op.execute(PREVIOUS_APPLY_EVENTS)
    op.execute(PREVIOUS_APPLY_EVENT)
    op.execute(PREVIOUS_ENQUEUE_WEBHOOKS)
    op.execute(PREVIOUS_JOB_DEADLINE)
    op.execute("DROP FUNCTION settle_job(jobs)")
    op.execute("DROP FUNCTION record_event(jobs, events, job_configuration_steps)")
