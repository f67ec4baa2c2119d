-- Transactions created ahead of a checkout by other BoxCostPro services carry the caller's key.
ALTER TABLE billing.transactions ADD COLUMN idempotency_key text UNIQUE;
-- Listing a tenant's rows newest first, and operators' listing of events.
CREATE INDEX transactions_tenant_recent_idx ON billing.transactions (tenant_id, created_at DESC, id DESC);
CREATE INDEX user_subscriptions_tenant_recent_idx ON billing.user_subscriptions (tenant_id, created_at DESC, id DESC);
CREATE INDEX webhook_events_recent_idx ON billing.webhook_events (received_at DESC, id DESC);
