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
