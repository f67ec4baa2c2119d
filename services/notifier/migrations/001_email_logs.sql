-- The notifier owns the `notifier` schema: one row per email accepted, with what became of it.
-- Fields of the existing BoxCostPro EmailLog model (tenant_id, user_id, to_email, subject, email_type,
-- sent, error_message, sent_at) plus delivery state.

CREATE TABLE notifier.email_logs (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    user_id          text,
    to_email         text NOT NULL,
    to_name          text NOT NULL DEFAULT '',
    tenant_name      text NOT NULL,
    subject          text NOT NULL,
    email_type       text NOT NULL,
    html             text NOT NULL,
    body_text        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued', 'retrying', 'sent', 'failed')),
    sent             boolean GENERATED ALWAYS AS (status = 'sent') STORED,
    error_message    text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    sent_at          timestamptz,
    idempotency_key  text NOT NULL UNIQUE,
    request_fingerprint text NOT NULL,
    message_id       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- What the sender polls: due emails only.
CREATE INDEX email_logs_due_idx ON notifier.email_logs (next_attempt_at)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX email_logs_tenant_idx ON notifier.email_logs (tenant_id, created_at DESC, id DESC);
