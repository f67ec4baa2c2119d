-- Every email's HTML (~4 KB) is compressed as it is stored. lz4 does that in about half the time of the
-- default pglz, for rows ~25% larger (measured on rendered receipts); it applies to rows written from now
-- on. A server built without lz4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE notifier.email_logs ALTER COLUMN html SET COMPRESSION lz4,
                                        ALTER COLUMN body_text SET COMPRESSION lz4;
    END IF;
END
$$;
