-- +goose NO TRANSACTION
-- +goose Up
-- StalePendingRequests (queries/entries.sql), which every instance runs every
-- third of DICT_DIRECTORY_RESEND_AFTER, finds a pending write's requests by
-- the key they are for: outbox rows of event_type DirectoryRequest by
-- aggregate_id, from the write's first request's seq. No index led there, so
-- the planner read the whole outbox (every row kept for OUTBOX_RETENTION, a
-- day of events by default) each time, whether or not a write was pending.
-- Only DirectoryRequest rows are indexed, so other events cost no entry.
--
-- CONCURRENTLY, outside a transaction, so that building it on a large outbox
-- does not hold up the writes meanwhile. A build that failed leaves an
-- invalid index of the same name: the DROP removes it before the next try.
DROP INDEX CONCURRENTLY IF EXISTS outbox_directory_requests;
CREATE INDEX CONCURRENTLY outbox_directory_requests ON outbox (aggregate_id, seq) WHERE event_type = 'DirectoryRequest';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS outbox_directory_requests;
