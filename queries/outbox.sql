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
-- The unpublished rows are, lane by lane, the unsequenced ones
-- (outbox_unsequenced) and the ones in flight (outbox_unpublished); by lane, so
-- that the partial indexes are used whatever the planner knows of the table.
SELECT count(*)::bigint AS rows,
       coalesce(extract(epoch FROM now() - min(u.created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox_lanes l
CROSS JOIN LATERAL (
    SELECT o.created_at FROM outbox o WHERE o.lane = l.lane AND o.published_at IS NULL AND o.lane_seq IS NULL
    UNION ALL
    SELECT o.created_at FROM outbox o WHERE o.lane = l.lane AND o.published_at IS NULL AND o.lane_seq IS NOT NULL) u;

-- name: SequenceOutboxRound :many
-- One statement per relay round, under the caller's live lease (the lane row
-- locked). First it marks published the caller's acknowledged rows of its
-- previous round: the lane's unpublished rows with lane_seq in
-- [mark_from, mark_through], mark_rows of them (an empty range, from >
-- through, marks nothing). Then, only when no other row of the lane is in
-- flight (sequenced and unpublished), it gives up to max_rows unsequenced rows,
-- in insert order, the lane's next sequence numbers and their batches (per
-- topic, runs of at most max_batch rows; lane_batch is the sequence number of
-- a batch's first row), advances the lane, and returns them to send.
--
-- No other row in flight: without a range, none at all; with one, the caller
-- vouches that its previous statement left only that range in flight, so it
-- suffices that the range was marked in full and nobody sequenced since
-- (next_seq follows the range), which costs no scan.
--
-- It always returns at least one row, each with marked (how many rows it
-- marked), leased (false: the caller's lease is gone, nothing was done) and
-- ready (false: rows other than the marked ones may be in flight, and
-- ListSequencedOutbox has them); a row with lane_seq 0 carries only these. No
-- other row and ready: nothing to sequence.
WITH lease AS (
    SELECT l.next_seq AS held_next_seq FROM outbox_lanes l
    WHERE l.lane = @lane AND l.owner = @owner::text AND l.lease_until > now()
    FOR UPDATE
), marked AS (
    UPDATE outbox m SET published_at = now()
    WHERE m.lane = sqlc.arg(lane)::smallint AND m.published_at IS NULL AND m.lane_seq IS NOT NULL
      AND m.lane_seq BETWEEN @mark_from::bigint AND @mark_through::bigint
      AND EXISTS (SELECT 1 FROM lease)
    RETURNING m.lane_seq
), lane AS (
    SELECT lease.held_next_seq AS next_seq FROM lease
    WHERE CASE WHEN @mark_from::bigint > @mark_through::bigint
               THEN NOT EXISTS (SELECT 1 FROM outbox f
                                WHERE f.lane = @lane AND f.published_at IS NULL AND f.lane_seq IS NOT NULL)
               ELSE lease.held_next_seq - @mark_through::bigint = 1
                    AND (SELECT count(*) FROM marked) = @mark_rows::bigint
          END
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
), round AS (
    -- The round as arrays, so that the update below finds its rows by primary
    -- key and their numbers by position, whatever the planner knows of the
    -- table: a join of outbox with numbered degrades, on a table without
    -- statistics yet, into a scan of the whole table per row.
    SELECT array_agg(numbered.id ORDER BY numbered.seq) AS ids,
           array_agg(numbered.lane_seq ORDER BY numbered.seq) AS lane_seqs,
           array_agg(numbered.lane_batch ORDER BY numbered.seq) AS lane_batches
    FROM numbered
), advanced AS (
    UPDATE outbox_lanes SET next_seq = next_seq + (SELECT count(*) FROM numbered)
    WHERE outbox_lanes.lane = @lane AND EXISTS (SELECT 1 FROM numbered)
), sequenced AS (
    UPDATE outbox o
    SET lane_seq = r.lane_seqs[array_position(r.ids, o.id)],
        lane_batch = r.lane_batches[array_position(r.ids, o.id)]
    FROM round r
    WHERE o.id = ANY((SELECT ids FROM round)::uuid[])
      AND o.lane = sqlc.arg(lane)::smallint AND o.published_at IS NULL AND o.lane_seq IS NULL
    RETURNING o.id, o.topic, o.partition_key, o.event_type, o.aggregate_type, o.aggregate_id, o.participant,
              o.content_type, o.payload, o.created_at, o.lane_seq, o.lane_batch, o.traceparent
)
SELECT c.marked, c.leased, c.ready, coalesce(s.id, '00000000-0000-0000-0000-000000000000')::uuid AS id,
       coalesce(s.topic, '')::text AS topic, coalesce(s.partition_key, '')::text AS partition_key,
       coalesce(s.event_type, '')::text AS event_type, coalesce(s.aggregate_type, '')::text AS aggregate_type,
       coalesce(s.aggregate_id, '')::text AS aggregate_id, coalesce(s.participant, '')::text AS participant,
       coalesce(s.content_type, '')::text AS content_type, coalesce(s.payload, '')::bytea AS payload,
       coalesce(s.created_at, 'epoch')::timestamptz AS created_at, coalesce(s.lane_seq, 0)::bigint AS lane_seq,
       coalesce(s.lane_batch, 0)::bigint AS lane_batch, s.traceparent
FROM (SELECT (SELECT count(*) FROM marked)::bigint AS marked,
             EXISTS (SELECT 1 FROM lease) AS leased,
             EXISTS (SELECT 1 FROM lane) AS ready) c
LEFT JOIN sequenced s ON true;

-- name: OutboxIdentity :one
SELECT id FROM outbox_identity WHERE singleton;
