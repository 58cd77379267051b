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

-- name: LockOutboxLane :one
-- Locks the caller's lane for sequencing; no row when the lease was lost.
SELECT next_seq FROM outbox_lanes
WHERE lane = @lane AND owner = @owner::text AND lease_until > now()
FOR UPDATE;

-- name: ListUnsequencedOutbox :many
SELECT id FROM outbox
WHERE lane = @lane AND published_at IS NULL AND lane_seq IS NULL
ORDER BY seq
LIMIT @max_rows::int;

-- name: SequenceOutbox :exec
-- Gives the rows ids[i] the lane sequence first_seq+i.
UPDATE outbox o SET lane_seq = sqlc.arg(first_seq)::bigint + t.ord - 1
FROM unnest(@ids::uuid[]) WITH ORDINALITY AS t(id, ord)
WHERE o.id = t.id AND o.lane_seq IS NULL;

-- name: AdvanceOutboxLane :exec
UPDATE outbox_lanes SET next_seq = @next_seq::bigint WHERE lane = @lane;

-- name: ListSequencedOutbox :many
SELECT id, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type,
       payload, created_at, lane_seq::bigint AS lane_seq, traceparent
FROM outbox
WHERE lane = @lane AND published_at IS NULL AND lane_seq IS NOT NULL
ORDER BY lane_seq
LIMIT @max_rows::int;

-- name: MarkOutboxPublished :execrows
-- Marks acknowledged rows, only while the caller still holds the lane.
UPDATE outbox SET published_at = now()
WHERE id = ANY(@ids::uuid[]) AND published_at IS NULL
  AND EXISTS (SELECT 1 FROM outbox_lanes l
              WHERE l.lane = @lane AND l.owner = @owner::text AND l.lease_until > now());

-- name: RecordOutboxFailure :exec
UPDATE outbox SET attempts = attempts + 1, last_error = @last_error::text
WHERE id = ANY(@ids::uuid[]);

-- name: OutboxBacklog :one
SELECT count(*)::bigint AS rows,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox WHERE published_at IS NULL;
