-- What the customer knows a payment's method by: a card's brand and last four digits ("visa 4242"), a
-- bank's or wallet's name. Never more of a card number than its last four digits.
ALTER TABLE billing.transactions ADD COLUMN payment_method_detail text;
