-- Emails billing asks the notifier to send, written in the same transaction as the change they report
-- (the outbox pattern): a committed change always gets its email, a rolled-back one never does.
CREATE TABLE billing.email_outbox (
    id               uuid PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    kind             text NOT NULL,
    request          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX email_outbox_due_idx ON billing.email_outbox (next_attempt_at) WHERE status = 'pending';

-- The customer's name as the provider gave it, for greeting them.
ALTER TABLE billing.transactions ADD COLUMN customer_name text;
ALTER TABLE billing.user_subscriptions ADD COLUMN customer_name text;
