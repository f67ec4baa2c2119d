-- What each period of a subscription costs, when one fixed price states it (null otherwise: metered or
-- tiered prices, a discount). Nullable columns without defaults: adding them rewrites nothing.
ALTER TABLE billing.user_subscriptions ADD COLUMN price_amount bigint, ADD COLUMN price_currency text;
