-- The status rule: what a job's counters make of it. Called by settle_job for every job whose
-- events were stored. Must stay a pure function of its arguments, so that every writer that
-- works out a status from counters gets the same one.
CREATE OR REPLACE FUNCTION job_status(
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
$$;
