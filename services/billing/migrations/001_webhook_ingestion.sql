-- Billing owns the `billing` schema: every received webhook event, payment transactions and
-- user subscriptions. Money is an integer in minor units with an ISO-4217 currency code.

CREATE TABLE billing.webhook_events (
    id              uuid PRIMARY KEY,
    provider        text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    request_id      text,
    received_at     timestamptz NOT NULL,
    processed_at    timestamptz,
    status          text NOT NULL CHECK (status IN ('processed', 'ignored', 'failed')),
    error           text,
    attempts        integer NOT NULL DEFAULT 1,
    transaction_ids uuid[] NOT NULL DEFAULT '{}',
    subscription_ids uuid[] NOT NULL DEFAULT '{}',
    UNIQUE (provider, event_id)
);
CREATE INDEX webhook_events_status_idx ON billing.webhook_events (status, received_at);
CREATE INDEX webhook_events_type_idx ON billing.webhook_events (provider, event_type, received_at);

CREATE TABLE billing.transactions (
    id                       uuid PRIMARY KEY,
    tenant_id                text,
    user_id                  text,
    provider                 text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
    amount                   bigint CHECK (amount >= 0),
    currency                 char(3),
    status                   text NOT NULL,
    provider_status          text,
    status_at                timestamptz NOT NULL,
    stripe_payment_intent_id text,
    stripe_charge_id         text,
    stripe_invoice_id        text,
    stripe_subscription_id   text,
    razorpay_order_id        text,
    razorpay_payment_id      text,
    razorpay_subscription_id text,
    payment_method           text,
    customer_email           text,
    failure_code             text,
    failure_message          text,
    failed_at                timestamptz,
    receipt_url              text,
    paid_at                  timestamptz,
    refunded_at              timestamptz,
    amount_refunded          bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    disputed_at              timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX transactions_stripe_pi_key ON billing.transactions (stripe_payment_intent_id)
    WHERE stripe_payment_intent_id IS NOT NULL;
CREATE UNIQUE INDEX transactions_razorpay_order_key ON billing.transactions (razorpay_order_id)
    WHERE razorpay_order_id IS NOT NULL;
-- Not unique: a refund that arrives before its payment's order is known starts a row of its own,
-- which the order's row adopts later.
CREATE INDEX transactions_razorpay_payment_idx ON billing.transactions (razorpay_payment_id)
    WHERE razorpay_payment_id IS NOT NULL;
CREATE INDEX transactions_stripe_invoice_idx ON billing.transactions (stripe_invoice_id)
    WHERE stripe_invoice_id IS NOT NULL;
CREATE INDEX transactions_stripe_charge_idx ON billing.transactions (stripe_charge_id)
    WHERE stripe_charge_id IS NOT NULL;
CREATE INDEX transactions_stripe_sub_idx ON billing.transactions (stripe_subscription_id)
    WHERE stripe_subscription_id IS NOT NULL;
CREATE INDEX transactions_razorpay_sub_idx ON billing.transactions (razorpay_subscription_id)
    WHERE razorpay_subscription_id IS NOT NULL;
CREATE INDEX transactions_tenant_idx ON billing.transactions (tenant_id, created_at, id);

CREATE TABLE billing.user_subscriptions (
    id                       uuid PRIMARY KEY,
    tenant_id                text,
    user_id                  text,
    provider                 text NOT NULL CHECK (provider IN ('stripe', 'razorpay')),
    plan                     text,
    status                   text NOT NULL,
    provider_status          text,
    status_at                timestamptz NOT NULL,
    stripe_subscription_id   text UNIQUE,
    razorpay_subscription_id text UNIQUE,
    current_period_start     timestamptz,
    current_period_end       timestamptz,
    cancelled_at             timestamptz,
    customer_email           text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_subscriptions_tenant_idx ON billing.user_subscriptions (tenant_id, created_at, id);
