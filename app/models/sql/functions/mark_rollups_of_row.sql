-- The trigger function of the nine mark_rollups_on_* triggers (jobs, job_step_completions,
-- job_step_errors): marks what the row counted before and after the change. The triggers' WHEN
-- clauses call it only for rows old enough to be in a closed period, never for an event on time.
CREATE OR REPLACE FUNCTION mark_rollups_of_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF TG_TABLE_NAME = 'jobs' THEN
            PERFORM mark_rollups(ARRAY[OLD.created_at, OLD.completed_at], OLD.configuration_id,
                                 OLD.created_at);
        ELSIF TG_TABLE_NAME = 'job_step_completions' THEN
            PERFORM mark_rollups(ARRAY[OLD.completed_at], OLD.configuration_id,
                                 OLD.job_created_at);
        ELSE
            PERFORM mark_rollups(ARRAY[]::timestamptz[], OLD.configuration_id,
                                 OLD.job_created_at);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF TG_TABLE_NAME = 'jobs' THEN
            PERFORM mark_rollups(ARRAY[NEW.created_at, NEW.completed_at], NEW.configuration_id,
                                 NEW.created_at);
        ELSIF TG_TABLE_NAME = 'job_step_completions' THEN
            PERFORM mark_rollups(ARRAY[NEW.completed_at], NEW.configuration_id,
                                 NEW.job_created_at);
        ELSE
            PERFORM mark_rollups(ARRAY[]::timestamptz[], NEW.configuration_id,
                                 NEW.job_created_at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
