-- Where the customer's reply goes, when the tenant has an address for it: the email's Reply-To header.
-- Empty: no Reply-To. A constant default adds the column without rewriting a row.
ALTER TABLE notifier.email_logs ADD COLUMN reply_to text NOT NULL DEFAULT '';
