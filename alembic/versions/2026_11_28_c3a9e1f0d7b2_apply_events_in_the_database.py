"""Apply events in the database

The job contract, in one place: `apply_events(events, visible_customer_id)` applies a batch of
events (a single event is a batch of one) to their jobs in one call, inside the caller's
transaction, and `job_status` is the status rule it uses. Every writer (the API, the seed) goes
through them.

Revision ID: c3a9e1f0d7b2
Revises: b7d41e09a2c3
Create Date: 2026-11-28 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c3a9e1f0d7b2"
down_revision: str | None = "b7d41e09a2c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUS = """
CREATE FUNCTION job_status(
    cancelled boolean,
    unresolved_errors bigint,
    steps_completed bigint,
    step_count bigint,
    event_count bigint
) RETURNS job_status LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE
        WHEN cancelled THEN 'cancelled'
        WHEN unresolved_errors > 0 THEN 'failed'
        WHEN steps_completed = step_count THEN 'completed'
        WHEN event_count > 0 THEN 'running'
        ELSE 'pending'
    END)::job_status
$$
"""

# One event of a call, as apply_events works it out before writing anything.
EVENT_TO_APPLY = """
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
    first_use integer,          -- the item that first used this event_key for this job
    first_completion boolean,   -- a step event that completes its step for the first time
    completes_job boolean,      -- a step event after which every step is complete
    resolver integer            -- a new error: the item of this call that resolves it
)
"""

APPLY_EVENTS = r"""
CREATE FUNCTION apply_events(events jsonb, visible_customer_id bigint)
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
--   changes nothing, even where the event would now be refused;
-- * a cancelled job, or a name that is not a step of the job's version, rejects the event;
-- * progress and cost count each step once; a step's completion time is the earliest
--   (occurred_at, else received_at) reported, whatever the order of arrival;
-- * an error makes the job failed while unresolved; a later step event for its step resolves
--   it; an error naming no step is resolved by a step event once every step is complete;
-- * job_step_completions keeps each step's completion, with the seconds since the job's
--   previous completion (by time, then step) for the funnel; job_step_errors counts the
--   errors that name a step, and whether that step was completed too.
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
                    CASE WHEN f.first_use = f.item THEN f.outcome ELSE 'repeat' END AS outcome,
                    f.problem, f.detail, f.row_id, f.first_use
                FROM (
                    SELECT u.item, u.job_id, u.reference, u.kind, u.name, u.step_id, u.points,
                        u.cost, u.event_key, u.occurred_at, u.received_at, u.message,
                        u.metadata, u.outcome, u.problem, u.detail, u.row_id,
                        CASE WHEN u.job_id IS NULL OR u.event_key IS NULL THEN u.item
                             ELSE min(u.item) OVER (PARTITION BY u.job_id, u.event_key)
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

        -- 7. Each job's row, once: counters, times and status.
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
            status = job_status(false, t.unresolved_error_count, t.steps_completed,
                                j.step_count, t.event_count)
        FROM (
            SELECT old.id,
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
        ) t
        WHERE j.id = t.id;
    END IF;

    -- A repeat answers as its first use did: its refusal, or the event that use stored.
    RETURN QUERY
        SELECT a.item,
            CASE WHEN a.outcome <> 'repeat' THEN a.outcome
                 WHEN f.outcome = 'rejected' THEN 'rejected' ELSE 'duplicate' END,
            CASE WHEN a.outcome <> 'repeat' THEN a.row_id ELSE f.row_id END,
            a.job_id,
            CASE WHEN a.outcome <> 'repeat' THEN a.problem ELSE f.problem END,
            CASE WHEN a.outcome <> 'repeat' THEN a.detail ELSE f.detail END
        FROM unnest(todo) AS a LEFT JOIN unnest(todo) AS f ON f.item = a.first_use
        ORDER BY a.item;
END
$$
"""

# The single-event route's one statement: the outcome, with the event and the job as they
# now are (read after the apply, which one statement joining the two could not see).
APPLY_EVENT = r"""
CREATE FUNCTION apply_event(event jsonb, visible_customer_id bigint)
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
    last_event_at timestamptz, completed_at timestamptz, cancelled_at timestamptz)
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
            j.last_event_at, j.completed_at, j.cancelled_at
        FROM (SELECT 1) AS one
        LEFT JOIN events ev ON ev.id = applied.event_id
        LEFT JOIN jobs j ON j.id = applied.job_id
        LEFT JOIN job_configurations c ON c.id = j.configuration_id;
END
$$
"""


def upgrade() -> None:
    op.execute(JOB_STATUS)
    op.execute(EVENT_TO_APPLY)
    op.execute(APPLY_EVENTS)
    op.execute(APPLY_EVENT)


def downgrade() -> None:
    op.execute("DROP FUNCTION apply_event(jsonb, bigint)")
    op.execute("DROP FUNCTION apply_events(jsonb, bigint)")
    op.execute("DROP TYPE event_to_apply")
    op.execute("DROP FUNCTION job_status(boolean, bigint, bigint, bigint, bigint)")
