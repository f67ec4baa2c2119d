-- The outbox keeps each email as the notifier's EmailContent message, serialized (protobuf's binary form):
-- a link that comes later is appended as a message of its own, which protobuf merges into the first on
-- reading. Rows written before keep their JSON in `request` until they are sent.
ALTER TABLE billing.email_outbox
    ADD COLUMN content bytea,
    ALTER COLUMN request DROP NOT NULL,
    ADD CONSTRAINT email_outbox_content_or_request CHECK (content IS NOT NULL OR request IS NOT NULL);
