-- Payments received that no tenant owns (no tenant in the provider's metadata, nor on their subscription):
-- operators list them (ListUnattributedTransactions) and a gauge counts them every 15 s, from this partial
-- index. Building it reads the transactions once, while this migration's transaction holds writes to them;
-- on a large database apply it at a quiet hour (webhooks meanwhile are answered 503 and sent again).
CREATE INDEX transactions_unattributed_idx ON billing.transactions (paid_at)
    WHERE tenant_id IS NULL AND paid_at IS NOT NULL;
