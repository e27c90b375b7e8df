-- The quarter hour (UTC) that holds a moment: the grain of the usage rollups. Called by
-- mark_rollups and by the rollups' reads and writes (app/services/rollups/).
CREATE OR REPLACE FUNCTION rollup_bucket(at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00')
$$;
