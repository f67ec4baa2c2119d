-- A payment that waits on its customer (to authenticate it, complete a transfer, pay a voucher): the
-- provider's page where they do it, what it asks of them, and when the provider asked.
ALTER TABLE billing.transactions
    ADD COLUMN action_url text,
    ADD COLUMN action_instructions text,
    ADD COLUMN action_requested_at timestamptz;
