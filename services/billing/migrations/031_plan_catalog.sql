-- The plan catalog: each provider plan (a Stripe price, a Razorpay plan) with the name its customers know
-- it by, its interval and amount; set by operators, or read once from the provider. Subscriptions keep
-- their plan's id and the provider's nickname for it; an outbox email about a subscription names the plan
-- whose catalog name it takes when handed over.
CREATE TABLE billing.plans (
    provider       text NOT NULL,
    plan_id        text NOT NULL,
    name           text NOT NULL DEFAULT '',
    interval       text NOT NULL DEFAULT '',  -- day, week, month or year
    interval_count integer,
    amount         bigint,  -- minor units of currency, each interval
    currency       text,
    source         text NOT NULL CHECK (source IN ('operator', 'provider')),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text NOT NULL DEFAULT '',
    PRIMARY KEY (provider, plan_id)
);
ALTER TABLE billing.user_subscriptions ADD COLUMN plan_id text, ADD COLUMN plan_nickname text;
ALTER TABLE billing.email_outbox ADD COLUMN plan_ref text;
