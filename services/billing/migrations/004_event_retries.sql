-- Failed events are retried automatically with backoff until a limit; past it they stay failed with no
-- next retry: the dead letter, counted and replayable by operators.
ALTER TABLE billing.webhook_events ADD COLUMN next_retry_at timestamptz;
CREATE INDEX webhook_events_retry_idx ON billing.webhook_events (next_retry_at) WHERE status = 'failed';
