-- +goose Up
-- The bounds of a lane's batch (00013: done_seq from the batch's first row,
-- last_seq its last) are valid only for the batch that bounds_batch names.
-- A relay of the previous version (during a rolling deploy) starts batches
-- without setting them, so last_seq may still bound the batch before: for
-- such a batch bounds_batch is behind batch_no, and rounds walk from done_seq
-- with no upper bound, which reads more but misses nothing
-- (eventbus TestRelayFinishesBatchOfPreviousVersion).
ALTER TABLE outbox_lanes ADD COLUMN bounds_batch bigint NOT NULL DEFAULT -1;
-- The batches in progress were bounded by 00013.
UPDATE outbox_lanes SET bounds_batch = batch_no;

-- +goose Down
ALTER TABLE outbox_lanes DROP COLUMN bounds_batch;
