-- Every replay of stored events by selection, dry runs included: who asked (the caller's certificate
-- identity), why, what was chosen, and what came of it.
CREATE TABLE billing.event_replays (
    id           uuid PRIMARY KEY,
    requested_by text NOT NULL,
    reason       text NOT NULL,
    selection    jsonb NOT NULL,
    dry_run      boolean NOT NULL,
    events       integer NOT NULL,
    outcomes     jsonb NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_replays_requested_at_idx ON billing.event_replays (requested_at DESC);
