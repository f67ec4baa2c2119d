-- How each tenant's emails name and brand it; a tenant without a row gets BoxCostPro's name and look.
-- Empty text is "not set". A profile is replaced whole, and says who set it last.
CREATE TABLE billing.tenant_profiles (
    tenant_id           text PRIMARY KEY,
    display_name        text NOT NULL,
    support_email       text NOT NULL DEFAULT '',
    support_url         text NOT NULL DEFAULT '',
    reply_to            text NOT NULL DEFAULT '',
    brand_color         text NOT NULL DEFAULT '',
    logo_url            text NOT NULL DEFAULT '',
    locale              text NOT NULL DEFAULT '',
    time_zone           text NOT NULL DEFAULT '',
    portal_url_template text NOT NULL DEFAULT '',
    disabled_emails     text[] NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          text NOT NULL DEFAULT ''
);

-- An email of a kind its tenant turned off is "skipped" at hand-over: kept, never sent. Rows already
-- stored hold the older statuses, so the wider check need not read them (NOT VALID).
ALTER TABLE billing.email_outbox DROP CONSTRAINT email_outbox_status_check;
ALTER TABLE billing.email_outbox ADD CONSTRAINT email_outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'skipped')) NOT VALID;
