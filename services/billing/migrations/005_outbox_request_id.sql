-- The request id of the webhook that caused an email, sent along to the notifier so one webhook can be
-- followed through all three services' logs.
ALTER TABLE billing.email_outbox ADD COLUMN request_id text;
