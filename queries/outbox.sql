-- name: InsertOutbox :exec
INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload, traceparent)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, sqlc.narg(traceparent));

-- name: ListOutboxByAggregate :many
SELECT * FROM outbox WHERE aggregate_id = $1 ORDER BY created_at, id;

-- name: RenewOutboxLanes :many
-- Extends the caller's live leases. It waits for a lane's row lock (held
-- briefly while the lane is sequenced) rather than skip it, so a busy lane is
-- never mistaken for a lost one.
UPDATE outbox_lanes SET lease_until = now() + @ttl::interval
WHERE owner = @owner::text AND lease_until > now()
RETURNING lane;

-- name: ClaimOutboxLanes :many
-- Takes up to max_lanes free or expired lanes; SKIP LOCKED so concurrent
-- relays never wait on each other.
UPDATE outbox_lanes SET owner = @owner::text, lease_until = now() + @ttl::interval
WHERE lane IN (
    SELECT l.lane FROM outbox_lanes l
    WHERE l.lease_until < now()
    ORDER BY l.lane
    LIMIT @max_lanes::int
    FOR UPDATE SKIP LOCKED)
RETURNING lane;

-- name: ReleaseOutboxLanes :exec
UPDATE outbox_lanes SET owner = '', lease_until = '-infinity'
WHERE owner = @owner::text;

-- name: ListSequencedOutbox :many
SELECT id, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type,
       payload, created_at, lane_seq::bigint AS lane_seq, coalesce(lane_batch, lane_seq)::bigint AS lane_batch,
       traceparent
FROM outbox
WHERE lane = @lane AND published_at IS NULL AND lane_seq IS NOT NULL
ORDER BY lane_seq
LIMIT @max_rows::int;

-- name: MarkOutboxPublished :execrows
-- Marks acknowledged rows, only while the caller still holds the lane. The
-- lane and in-flight conditions let it read the lane's in-flight rows through
-- outbox_unpublished rather than the whole table.
UPDATE outbox o SET published_at = now()
WHERE o.lane = sqlc.arg(lane)::smallint AND o.published_at IS NULL AND o.lane_seq IS NOT NULL
  AND o.id = ANY(@ids::uuid[])
  AND EXISTS (SELECT 1 FROM outbox_lanes l
              WHERE l.lane = sqlc.arg(lane)::smallint AND l.owner = @owner::text AND l.lease_until > now());

-- name: RecordOutboxFailure :exec
UPDATE outbox SET attempts = attempts + 1, last_error = @last_error::text
WHERE id = ANY(@ids::uuid[]);

-- name: OutboxBacklog :one
SELECT count(*)::bigint AS rows,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox WHERE published_at IS NULL;

-- name: SequenceOutboxRound :many
-- One statement per relay round: under the caller's live lease (the lane row
-- locked), and only when none of the lane's rows is still in flight, gives up
-- to max_rows unsequenced rows, in insert order, the lane's next sequence
-- numbers and their batches (per topic, runs of at most max_batch rows;
-- lane_batch is the sequence number of a batch's first row), advances the
-- lane, and returns the rows to send. No row: nothing to do, or the lease is
-- gone, or rows are in flight (ListSequencedOutbox has them).
WITH lane AS (
    SELECT l.next_seq FROM outbox_lanes l
    WHERE l.lane = @lane AND l.owner = @owner::text AND l.lease_until > now()
      AND NOT EXISTS (SELECT 1 FROM outbox f
                      WHERE f.lane = @lane AND f.published_at IS NULL AND f.lane_seq IS NOT NULL)
    FOR UPDATE
), todo AS (
    SELECT t.id, t.topic, t.seq,
           row_number() OVER (ORDER BY t.seq) AS rn,
           (row_number() OVER (PARTITION BY t.topic ORDER BY t.seq) - 1) / @max_batch::int AS bn
    FROM (SELECT o.id, o.topic, o.seq FROM outbox o
          WHERE o.lane = @lane AND o.published_at IS NULL AND o.lane_seq IS NULL
            AND EXISTS (SELECT 1 FROM lane)
          ORDER BY o.seq
          LIMIT @max_rows::int) t
), numbered AS (
    SELECT todo.id, todo.seq, lane.next_seq + todo.rn - 1 AS lane_seq,
           lane.next_seq + min(todo.rn) OVER (PARTITION BY todo.topic, todo.bn) - 1 AS lane_batch
    FROM todo, lane
), advanced AS (
    UPDATE outbox_lanes SET next_seq = next_seq + (SELECT count(*) FROM numbered)
    WHERE outbox_lanes.lane = @lane AND EXISTS (SELECT 1 FROM numbered)
)
UPDATE outbox o SET lane_seq = n.lane_seq, lane_batch = n.lane_batch
FROM numbered n
WHERE o.id = n.id AND o.lane = sqlc.arg(lane)::smallint AND o.published_at IS NULL AND o.lane_seq IS NULL
  -- The round's range of the lane's unsequenced rows (outbox_unsequenced), not all of them.
  AND o.seq BETWEEN (SELECT min(seq) FROM numbered) AND (SELECT max(seq) FROM numbered)
RETURNING o.id, o.topic, o.partition_key, o.event_type, o.aggregate_type, o.aggregate_id, o.participant,
          o.content_type, o.payload, o.created_at, o.lane_seq::bigint AS lane_seq,
          o.lane_batch::bigint AS lane_batch, o.traceparent;

-- name: OutboxIdentity :one
SELECT id FROM outbox_identity WHERE singleton;
