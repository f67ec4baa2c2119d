-- A recipient's erasure at their request: their emails keep ids, keys, kinds, statuses and times, and when
-- they were erased; each erasure is recorded with who asked and why, the address only as its SHA-256 (of
-- the lower-cased address).
ALTER TABLE notifier.email_logs ADD COLUMN erased_at timestamptz;
CREATE TABLE notifier.erasures (
    id           uuid PRIMARY KEY,
    requested_by text NOT NULL,
    reason       text NOT NULL,
    email_sha256 bytea NOT NULL,
    emails       integer NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_email_idx ON notifier.erasures (email_sha256);
