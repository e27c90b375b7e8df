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
