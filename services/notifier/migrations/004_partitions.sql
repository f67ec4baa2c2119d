-- The email log is kept in weekly partitions by created_at, so that emails past retention (with their
-- rendered bodies and addresses) go by dropping whole partitions: see `python -m notifier partitions`.
-- A DEFAULT partition takes rows outside the prepared weeks. A unique key on a partitioned table must
-- hold its partition column, so idempotency keys move to a table of their own, kept at least as long as a
-- sender retries. Every row is copied: on a large database, apply this at a quiet hour.

CREATE TABLE notifier.email_keys (
    idempotency_key text PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO notifier.email_keys (idempotency_key, created_at)
SELECT idempotency_key, created_at FROM notifier.email_logs;
CREATE INDEX email_keys_created_at_idx ON notifier.email_keys (created_at);

ALTER TABLE notifier.email_logs RENAME TO email_logs_unpartitioned;
CREATE TABLE notifier.email_logs (LIKE notifier.email_logs_unpartitioned
    INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION)
    PARTITION BY RANGE (created_at);
CREATE TABLE notifier.email_logs_default PARTITION OF notifier.email_logs DEFAULT;
DO $$
DECLARE
    week timestamp := date_trunc('week', coalesce((SELECT min(created_at) FROM notifier.email_logs_unpartitioned),
                                                  now()) AT TIME ZONE 'UTC');
BEGIN
    WHILE week <= (now() + interval '8 weeks') AT TIME ZONE 'UTC' LOOP
        EXECUTE format('CREATE TABLE notifier.%I PARTITION OF notifier.email_logs FOR VALUES FROM (%L) TO (%L)',
                       'email_logs_p' || to_char(week, 'YYYYMMDD'),
                       week AT TIME ZONE 'UTC', (week + interval '7 days') AT TIME ZONE 'UTC');
        week := week + interval '7 days';
    END LOOP;
END $$;
INSERT INTO notifier.email_logs (id, tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type, html,
                                 body_text, status, error_message, attempts, next_attempt_at, sent_at,
                                 idempotency_key, request_fingerprint, message_id, created_at, updated_at, requeued_at)
SELECT id, tenant_id, user_id, to_email, to_name, tenant_name, subject, email_type, html, body_text, status,
       error_message, attempts, next_attempt_at, sent_at, idempotency_key, request_fingerprint, message_id,
       created_at, updated_at, requeued_at
FROM notifier.email_logs_unpartitioned;
DROP TABLE notifier.email_logs_unpartitioned;
ALTER TABLE notifier.email_logs ADD PRIMARY KEY (id, created_at);
CREATE INDEX email_logs_key_idx ON notifier.email_logs (idempotency_key);
CREATE INDEX email_logs_due_idx ON notifier.email_logs (next_attempt_at) WHERE status IN ('queued', 'retrying');
CREATE INDEX email_logs_tenant_idx ON notifier.email_logs (tenant_id, created_at DESC, id DESC);
CREATE INDEX email_logs_failed_idx ON notifier.email_logs (updated_at) WHERE status = 'failed';
