-- Provider payloads of several KB are compressed as they are stored: lz4 takes about half the time of the
-- default pglz, for ~25% more space; it applies to rows written from now on. A server built without lz4
-- keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE billing.webhook_events ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
END
$$;
