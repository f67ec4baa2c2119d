-- Billing looks payments up by their subscription for one reason: a payment stored before its
-- subscription's owner was known (an invoice without metadata that came first) takes the owner, and the
-- emails that waited for it, when the subscription brings it. Those are the only rows the lookup wants,
-- so the subscription indexes now hold only them, instead of every subscription payment: fewer index
-- writes on every renewal, and a plan that cannot take the tenant index for `tenant_id IS NULL`.
-- Operators: the new indexes are built in this migration's transaction, which holds writes to
-- transactions while the table is read once each. On a large database apply it at a quiet hour;
-- webhooks arriving meanwhile are answered 503 after billing's timeout, and providers send them again.
CREATE INDEX transactions_ownerless_stripe_sub_idx ON billing.transactions (stripe_subscription_id)
    WHERE tenant_id IS NULL;
CREATE INDEX transactions_ownerless_razorpay_sub_idx ON billing.transactions (razorpay_subscription_id)
    WHERE tenant_id IS NULL;
DROP INDEX billing.transactions_stripe_sub_idx;
DROP INDEX billing.transactions_razorpay_sub_idx;
