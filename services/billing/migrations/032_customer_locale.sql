-- The customer's language, where the platform's metadata or the checkout names it: their emails are in it,
-- else in their tenant's.
ALTER TABLE billing.transactions ADD COLUMN customer_locale text;
ALTER TABLE billing.user_subscriptions ADD COLUMN customer_locale text;
