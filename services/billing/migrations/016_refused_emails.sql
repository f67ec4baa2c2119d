-- Emails the notifier refused stay in the outbox as 'dead', with the refusal. Operators list them and
-- queue them again (RetryRefusedEmails), and a gauge counts them every 15 s: a partial index holds just
-- those. Building it reads the outbox once, while this migration's transaction holds writes to it; on a
-- large database apply it at a quiet hour (webhooks meanwhile are answered 503 and sent again).
CREATE INDEX email_outbox_dead_idx ON billing.email_outbox (created_at) WHERE status = 'dead';
