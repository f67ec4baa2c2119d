-- Received events and outbox emails are kept in weekly partitions by time (webhook_events by received_at,
-- email_outbox by created_at), so that those past retention go by dropping whole partitions: see
-- `python -m billing partitions`. A DEFAULT partition takes rows outside the prepared weeks.
-- A unique key on a partitioned table must hold its partition column, so event ids and email idempotency
-- keys move to tables of their own (event_ids, email_keys), kept as long as an event can come again.
-- Every row is copied: on a large database, apply this at a quiet hour.

CREATE FUNCTION billing.create_weekly_partitions(parent text, first timestamptz, last timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    week timestamp := date_trunc('week', first AT TIME ZONE 'UTC');
BEGIN
    WHILE week <= last AT TIME ZONE 'UTC' LOOP
        EXECUTE format('CREATE TABLE billing.%I PARTITION OF billing.%I FOR VALUES FROM (%L) TO (%L)',
                       parent || '_p' || to_char(week, 'YYYYMMDD'), parent,
                       week AT TIME ZONE 'UTC', (week + interval '7 days') AT TIME ZONE 'UTC');
        week := week + interval '7 days';
    END LOOP;
END $$;

-- Each id with the key of its stored event (id, received_at), while that is kept.
CREATE TABLE billing.event_ids (
    provider    text NOT NULL,
    event_id    text NOT NULL,
    id          uuid NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);
INSERT INTO billing.event_ids (provider, event_id, id, received_at)
SELECT provider, event_id, id, received_at FROM billing.webhook_events;
CREATE INDEX event_ids_received_at_idx ON billing.event_ids (received_at);

ALTER TABLE billing.razorpay_bodies ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX razorpay_bodies_stored_at_idx ON billing.razorpay_bodies (stored_at);

ALTER TABLE billing.webhook_events RENAME TO webhook_events_unpartitioned;
CREATE TABLE billing.webhook_events (LIKE billing.webhook_events_unpartitioned
    INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)
    PARTITION BY RANGE (received_at);
CREATE TABLE billing.webhook_events_default PARTITION OF billing.webhook_events DEFAULT;
SELECT billing.create_weekly_partitions('webhook_events',
    coalesce((SELECT min(received_at) FROM billing.webhook_events_unpartitioned), now()), now() + interval '8 weeks');
INSERT INTO billing.webhook_events SELECT * FROM billing.webhook_events_unpartitioned;
DROP TABLE billing.webhook_events_unpartitioned;
-- The key, in the order operators' lists read it (newest first, walked backwards): one index for both.
ALTER TABLE billing.webhook_events ADD PRIMARY KEY (received_at, id);
CREATE INDEX webhook_events_event_id_idx ON billing.webhook_events (provider, event_id);
CREATE INDEX webhook_events_retry_idx ON billing.webhook_events (next_retry_at) WHERE status = 'failed';
CREATE INDEX webhook_events_failed_idx ON billing.webhook_events (received_at DESC, id DESC) WHERE status = 'failed';

CREATE TABLE billing.email_keys (
    idempotency_key text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO billing.email_keys (idempotency_key, created_at)
SELECT idempotency_key, created_at FROM billing.email_outbox;
CREATE INDEX email_keys_created_at_idx ON billing.email_keys (created_at);

ALTER TABLE billing.email_outbox RENAME TO email_outbox_unpartitioned;
CREATE TABLE billing.email_outbox (LIKE billing.email_outbox_unpartitioned
    INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)
    PARTITION BY RANGE (created_at);
CREATE TABLE billing.email_outbox_default PARTITION OF billing.email_outbox DEFAULT;
SELECT billing.create_weekly_partitions('email_outbox',
    coalesce((SELECT min(created_at) FROM billing.email_outbox_unpartitioned), now()), now() + interval '8 weeks');
INSERT INTO billing.email_outbox SELECT * FROM billing.email_outbox_unpartitioned;
DROP TABLE billing.email_outbox_unpartitioned;
ALTER TABLE billing.email_outbox ADD PRIMARY KEY (id, created_at);
CREATE INDEX email_outbox_key_idx ON billing.email_outbox (idempotency_key);
CREATE INDEX email_outbox_due_idx ON billing.email_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX email_outbox_dead_idx ON billing.email_outbox (created_at) WHERE status = 'dead';

DROP FUNCTION billing.create_weekly_partitions(text, timestamptz, timestamptz);
