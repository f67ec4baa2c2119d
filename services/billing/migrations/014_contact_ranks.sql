-- A payment's customer address and name were the first any event told, and the events can disagree
-- (the receipt address the merchant set, the account's, the one typed with the card): the row then
-- depended on arrival order. Each now keeps the rank of its source, and the most trusted wins.
-- Rows already stored keep what they have: they read as the top rank, so no source replaces them.
-- (A constant default is stored once in the catalogue, not written into every row.)
ALTER TABLE billing.transactions
    ADD COLUMN customer_email_rank smallint NOT NULL DEFAULT 3,
    ADD COLUMN customer_name_rank smallint NOT NULL DEFAULT 3;
ALTER TABLE billing.transactions
    ALTER COLUMN customer_email_rank SET DEFAULT 0,
    ALTER COLUMN customer_name_rank SET DEFAULT 0;
