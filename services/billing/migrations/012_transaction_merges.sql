-- A payment recorded twice until an event links the two (an invoice and its payment intent, from Stripe
-- API 2025-03-31) becomes one row, and the other row is deleted. Its id may have been listed to the
-- tenant, and events stored before the merge name it; this table keeps where each merged id went, so
-- that id still answers, with the row kept.
CREATE TABLE billing.transaction_merges (
    merged_id uuid PRIMARY KEY,
    kept_id   uuid NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now()
);
