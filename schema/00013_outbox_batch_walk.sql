-- +goose Up
-- A lane's batch is read in seq order, round after round (OutboxRound in
-- queries/outbox.sql). Through outbox_pending (lane, txid, seq) a round had to
-- read every row of the batch not yet sent and sort them, to return the next
-- few hundred: after a long broker outage, when the whole backlog is one
-- batch, draining it cost time quadratic in its size (a lane of 18,000 rows:
-- 0.57 s; of 4,560: 0.07 s). Rounds now walk outbox_batch_walk from the
-- batch's last sent row up to its last row, reading about as many rows as
-- they return. The first round of a batch still reads the batch once (through
-- outbox_pending) and records where the batch starts and ends.
--
-- done_seq of a new batch is its first row's seq - 1 (it was 0), so that a
-- round walks from there; last_seq is the batch's last row's seq.
--
-- "seq > 0" holds for every row (seq is an identity from 1): it is there so
-- that only a statement that says it can use the index. Walking a lane by seq
-- from its start reads every row kept for the retention, and a planner
-- without statistics chose that walk for the first round of a batch.
CREATE INDEX outbox_batch_walk ON outbox (lane, seq) WHERE published_at IS NULL AND seq > 0;
ALTER TABLE outbox_lanes ADD COLUMN last_seq bigint NOT NULL DEFAULT 9223372036854775807;
-- The batches in progress: their bounds from their rows.
UPDATE outbox_lanes l SET
    last_seq = coalesce(b.hi, l.done_seq),
    done_seq = CASE WHEN l.done_seq = 0 THEN coalesce(b.lo - 1, 0) ELSE l.done_seq END
FROM (
    SELECT l2.lane, min(o.seq) AS lo, max(o.seq) AS hi
    FROM outbox_lanes l2 LEFT JOIN outbox o
      ON o.lane = l2.lane AND o.published_at IS NULL
     AND pg_visible_in_snapshot(o.txid, l2.cur_snap) AND NOT pg_visible_in_snapshot(o.txid, l2.prev_snap)
    GROUP BY l2.lane) b
WHERE b.lane = l.lane;

-- +goose Down
ALTER TABLE outbox_lanes DROP COLUMN last_seq;
DROP INDEX outbox_batch_walk;
