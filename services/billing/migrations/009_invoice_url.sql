-- A transaction's receipt is its charge's receipt; the page of the invoice it paid is kept beside it.
-- Until now the first of the two to arrive filled receipt_url, so the same payment could end with either.
ALTER TABLE billing.transactions ADD COLUMN invoice_url text;
UPDATE billing.transactions SET invoice_url = receipt_url, receipt_url = NULL
WHERE stripe_invoice_id IS NOT NULL AND receipt_url LIKE 'https://invoice.stripe.com/%';
