-- A transaction made ahead of its payment (CreatePendingTransaction) held the amount the platform asked
-- for, whatever the provider later charged: a coupon at checkout left finance counting the asked price,
-- and a refund of all that was charged was taken for a partial one. `amount` is now what the provider
-- reports; what was asked is kept beside it. Until now the two were the same column, so existing rows
-- made ahead of their payment asked for what they hold.
ALTER TABLE billing.transactions ADD COLUMN requested_amount bigint, ADD COLUMN requested_currency char(3);
UPDATE billing.transactions SET requested_amount = amount, requested_currency = currency
WHERE idempotency_key IS NOT NULL;
