-- The Razorpay bodies already stored, by SHA-256, in a table whose primary key is the only way to look one
-- up: a batch's lookup planned while webhook_events was empty must not settle on reading every Razorpay
-- event through another index.
CREATE TABLE billing.razorpay_bodies (
    payload_sha256 bytea PRIMARY KEY,
    event_id       text NOT NULL
);
INSERT INTO billing.razorpay_bodies (payload_sha256, event_id)
    SELECT payload_sha256, event_id FROM billing.webhook_events
    WHERE provider = 'razorpay' AND payload_sha256 IS NOT NULL;
DROP INDEX billing.webhook_events_razorpay_body_key;
