-- Subscriptions no tenant owns (made in the provider's dashboard): operators list them
-- (ListUnattributedSubscriptions), the earliest recorded first, from this partial index, which holds only
-- those rows. Built in this migration's transaction: user_subscriptions is read once, and writes to it
-- wait meanwhile.
CREATE INDEX user_subscriptions_unattributed_idx ON billing.user_subscriptions (created_at, id)
    WHERE tenant_id IS NULL;
