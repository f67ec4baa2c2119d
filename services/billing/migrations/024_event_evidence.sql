-- The evidence kept with each event: the body exactly as it was signed (the parsed `payload` loses key
-- order and spacing, so a signature cannot be checked against it), the delivery's headers that matter
-- (its signature, the provider's ids; never a secret) and the address it came from. Large bodies are
-- compressed by PostgreSQL's TOAST. Rows stored before this have none.
ALTER TABLE billing.webhook_events
    ADD COLUMN body bytea,
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN client_address text;
