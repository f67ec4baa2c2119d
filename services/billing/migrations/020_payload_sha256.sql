-- The SHA-256 of each event's body as it was signed: evidence an operator can check a signature against,
-- and, for Razorpay, the delivery's identity. Razorpay's event id header is outside its signature, so one
-- captured body resent under new ids must be stored once. Rows stored before this have none.
ALTER TABLE billing.webhook_events ADD COLUMN payload_sha256 bytea;
CREATE UNIQUE INDEX webhook_events_razorpay_body_key ON billing.webhook_events (payload_sha256)
    WHERE provider = 'razorpay';
