-- Operators may queue failed emails again (RetryEmails). requeued_at is when an email last was: its retry
-- window counts from then, not from when it was first accepted. NULL for an email never queued again.
ALTER TABLE notifier.email_logs ADD COLUMN requeued_at timestamptz;
-- Emails that failed, by when they failed (their last update): what "every email failed since" reads.
-- Small, since few emails fail; building it reads the table once.
CREATE INDEX email_logs_failed_idx ON notifier.email_logs (updated_at) WHERE status = 'failed';
