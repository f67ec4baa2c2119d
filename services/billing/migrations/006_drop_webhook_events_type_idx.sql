-- (provider, event_type, received_at) shares its leading column with the (provider, event_id) key. A plan
-- made while the table is empty (billing plans each statement once per connection) can pick it for
-- the duplicate check, matching on provider alone and filtering event_id: every ingest then reads all of
-- that provider's events, and ingestion slows as the table grows. No query needs it: the event list
-- filters by type while walking webhook_events_recent_idx.
DROP INDEX billing.webhook_events_type_idx;
