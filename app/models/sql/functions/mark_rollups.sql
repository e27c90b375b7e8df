-- Marks for a row as it was or is: the quarter hours of the usage it counts (`usage_times`) and
-- the day of its job's creation (the funnel), where they are closed, so that reads and the next
-- roll-up take those periods live. Called by mark_rollups_of_row only; writes marks, nothing else.
CREATE OR REPLACE FUNCTION mark_rollups(
    usage_times timestamptz[], configuration_id bigint, job_created_at timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    closed timestamptz := (SELECT closed_until FROM rollup_state);
BEGIN
    IF closed IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO usage_rollup_marks (bucket_at)
    SELECT DISTINCT rollup_bucket(t.at) FROM unnest(usage_times) AS t(at) WHERE t.at < closed;
    IF job_created_at < closed THEN
        INSERT INTO funnel_rollup_marks (configuration_id, day)
        VALUES (configuration_id, date_trunc('day', job_created_at, 'UTC'));
    END IF;
END
$$;
