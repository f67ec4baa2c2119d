-- A refund can fail days after it was made (the card was closed) or be cancelled while pending, and the
-- money then comes back to the merchant. amount_refunded was the largest cumulative amount any event
-- reported, so it only grew, and a payment whose refund failed stayed refunded. Each refund is now kept
-- by its id with its state, beside the largest cumulative amount reported; amount_refunded is what of
-- them stands. Rows stored before this knew only the cumulative amount, which is what they report.
-- (Constant defaults are stored once in the catalogue; the UPDATE touches refunded payments only.)
ALTER TABLE billing.transactions
    ADD COLUMN refunds jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN refunds_reported bigint NOT NULL DEFAULT 0;
UPDATE billing.transactions SET refunds_reported = amount_refunded WHERE amount_refunded > 0;
