-- A customer's erasure at their request: the stored events that held their data keep their ids, type,
-- status and times, and when they were erased; each erasure is recorded with who asked and why, the
-- address only as its SHA-256 (of the lower-cased address).
ALTER TABLE billing.webhook_events ADD COLUMN erased_at timestamptz;
CREATE TABLE billing.erasures (
    id            uuid PRIMARY KEY,
    requested_by  text NOT NULL,
    reason        text NOT NULL,
    email_sha256  bytea NOT NULL,
    transactions  integer NOT NULL,
    subscriptions integer NOT NULL,
    events        integer NOT NULL,
    outbox_emails integer NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_email_idx ON billing.erasures (email_sha256);
