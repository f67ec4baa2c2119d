-- A Stripe subscription cancelled at the end of its paid period stays active until then; the date it
-- ends was not kept, so neither the platform nor the customer's email could tell it was ending.
ALTER TABLE billing.user_subscriptions ADD COLUMN cancel_at timestamptz;
