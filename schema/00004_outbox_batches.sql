-- +goose Up
-- The relay sends a lane's rows in batches (one Pulsar entry each) whose bounds
-- are fixed when the rows are sequenced and committed with them: lane_batch is
-- the lane_seq of the batch's first row. pulsar-client-go sends a batch under
-- its first sequence id, so the broker deduplicates a batch as a whole; a relay
-- that re-sends after a crash sends exactly the same batches, each either
-- already stored (dropped whole) or not stored at all (stored whole).
--
-- Payloads are bounded so that a full batch (100 rows) always fits in one
-- entry: the producer's batch limit is 4 MiB and the broker's message limit
-- 5 MiB. Events are a few hundred bytes.
ALTER TABLE outbox
    ADD COLUMN lane_batch bigint,
    ADD CONSTRAINT outbox_payload_size CHECK (octet_length(payload) <= 32768);

-- +goose Down
ALTER TABLE outbox DROP CONSTRAINT outbox_payload_size, DROP COLUMN lane_batch;
