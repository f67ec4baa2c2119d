-- Every ingested event inserts into each index of webhook_events, transactions and email_outbox. Three of
-- them cost that on every event and bought nothing:
-- * the tenant listings had an index in each direction; a btree is walked either way, and the lists ask
--   for newest first, so the descending ones stay;
-- * the idempotency key of transactions indexed every webhook-made row under NULL; only the rows other
--   services create ahead of a checkout have a key;
-- * events were indexed by (status, received_at) for the few that fail; a partial index holds just those,
--   in the order operators list them.
DROP INDEX billing.transactions_tenant_idx;
DROP INDEX billing.user_subscriptions_tenant_idx;

CREATE UNIQUE INDEX transactions_idempotency_key_idx ON billing.transactions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE billing.transactions DROP CONSTRAINT transactions_idempotency_key_key;

CREATE INDEX webhook_events_failed_idx ON billing.webhook_events (received_at DESC, id DESC) WHERE status = 'failed';
DROP INDEX billing.webhook_events_status_idx;
-- Operators: the two new indexes are built in this migration's transaction, which holds writes to
-- transactions and webhook_events while each table is read once. On a large database apply it at a quiet
-- hour; webhooks arriving meanwhile are answered 503 after billing's timeout, and providers send them again.
