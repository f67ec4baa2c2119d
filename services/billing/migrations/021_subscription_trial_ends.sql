-- When a subscription's trial ends, once the provider's notice has come: the notice is mailed when the
-- customer's address or tenant arrives after it.
ALTER TABLE billing.user_subscriptions ADD COLUMN trial_ends timestamptz;
