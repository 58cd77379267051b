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

-- name: OutboxRound :many
-- One statement per relay round (schema/00012_outbox_insert_only.sql,
-- 00013_outbox_batch_walk.sql, 00014_outbox_batch_bounds.sql), under the
-- caller's live lease (the lane row locked), writing no outbox row.
--
-- First it marks the caller's acknowledged round: when @mark_batch and
-- @mark_seq name the lane's round in flight, done_seq and next_seq move past
-- it and a row is appended to outbox_lane_marks. Then it returns the lane's
-- round to send: the round still in flight when there is one (the caller
-- failed it, or a relay died with it: the same rows, numbered alike), else
-- a new round of up to @max_rows rows of the lane's batch after done_seq,
-- in seq order, or, when the batch has none left, of a new batch (the rows
-- committed since the batch's snapshot: cur_snap becomes prev_snap and the
-- statement's snapshot cur_snap; done_seq and last_seq bound its rows' seqs,
-- which later rounds walk in outbox_batch_walk). A new round is recorded in the lane
-- before it is returned, with next_seq, from which the relay numbers it:
-- each row's Pulsar sequence id is next_seq + its position in the round (in
-- seq order), and its batch's, per topic, the sequence id of the first row of
-- its run of at most 100 rows (eventbus numberRound).
--
-- It always returns at least one row, each with leased (false: the lease is
-- gone, nothing was done), marked (how many rows it marked), resent (the
-- round was already in flight) and the round's batch_no and round_seq, which
-- the caller passes back as @mark_batch and @mark_seq once every row of the
-- round is acknowledged; a row with seq 0 carries only these.
WITH lease AS (
    SELECT l.batch_no, l.prev_snap, l.cur_snap, l.done_seq, l.round_seq, l.round_rows, l.next_seq, l.last_seq,
           l.bounds_batch
    FROM outbox_lanes l
    WHERE l.lane = @lane AND l.owner = @owner::text AND l.lease_until > now()
    FOR UPDATE
), marked AS (
    SELECT lease.batch_no, lease.round_seq, lease.round_rows, lease.prev_snap, lease.cur_snap FROM lease
    WHERE lease.round_rows > 0 AND lease.batch_no = @mark_batch::bigint AND lease.round_seq = @mark_seq::bigint
), s AS (
    -- The lane once the caller's round is marked.
    -- last_seq bounds the batch's walk only when this version of the relay
    -- started the batch (bounds_batch); else the walk has no upper bound.
    SELECT lease.batch_no, lease.prev_snap, lease.cur_snap, lease.bounds_batch,
           CASE WHEN lease.bounds_batch = lease.batch_no THEN lease.last_seq ELSE 9223372036854775807 END AS last_seq,
           CASE WHEN m.round_rows IS NULL THEN lease.done_seq ELSE lease.round_seq END AS done_seq,
           lease.next_seq + coalesce(m.round_rows, 0) AS next_seq,
           m.round_rows IS NULL AND lease.round_rows > 0 AS resent,
           CASE WHEN m.round_rows IS NULL AND lease.round_rows > 0 THEN lease.round_seq
                ELSE 9223372036854775807 END AS upto,
           CASE WHEN m.round_rows IS NULL AND lease.round_rows > 0 THEN greatest(@max_rows::int, lease.round_rows)
                ELSE @max_rows::int END AS max_rows
    FROM lease LEFT JOIN marked m ON true
), cur AS (
    -- The round from the lane's batch: the one in flight, or the next rows,
    -- walked in seq order through outbox_batch_walk from the last row sent to
    -- the batch's last row, so that a round reads about the rows it returns
    -- (and the rows of later batches in between). "o.seq > 0" (always true)
    -- is the index's predicate: no other statement can use the index, since
    -- walking a lane by seq from its start reads every row kept for the
    -- retention (a planner without statistics chose just that for fresh,
    -- when it could). The lane's values are scalar subqueries (computed
    -- once, before the scan), so that they bound the index scan whatever the
    -- planner knows of the table: the index holds every row not yet purged.
    SELECT o.id, o.topic, o.seq, o.partition_key, o.event_type, o.aggregate_type, o.aggregate_id, o.participant,
           o.content_type, o.payload, o.created_at, o.traceparent
    FROM outbox o
    WHERE o.lane = @lane AND o.published_at IS NULL AND o.seq > 0
      AND o.seq > (SELECT s.done_seq FROM s) AND o.seq <= (SELECT least(s.upto, s.last_seq) FROM s)
      AND pg_visible_in_snapshot(o.txid, (SELECT s.cur_snap FROM s))
      AND NOT pg_visible_in_snapshot(o.txid, (SELECT s.prev_snap FROM s))
    ORDER BY o.seq
    LIMIT (SELECT s.max_rows FROM s)
), nb AS (
    -- The batch is done (cur, limited to at least one row, found none): the
    -- next one, up to the statement's snapshot. With @max_rows 0 (only a
    -- mark) the batch stays.
    SELECT pg_current_snapshot() AS snap FROM s
    WHERE NOT s.resent AND @max_rows::int > 0 AND NOT EXISTS (SELECT 1 FROM cur)
), fresh AS (
    SELECT o.id, o.topic, o.seq, o.partition_key, o.event_type, o.aggregate_type, o.aggregate_id, o.participant,
           o.content_type, o.payload, o.created_at, o.traceparent
    FROM outbox o
    WHERE o.lane = @lane AND o.published_at IS NULL
      AND o.txid >= (SELECT pg_snapshot_xmin(s.cur_snap) FROM s)
      AND o.txid < (SELECT pg_snapshot_xmax(nb.snap) FROM nb)
      AND pg_visible_in_snapshot(o.txid, (SELECT nb.snap FROM nb))
      AND NOT pg_visible_in_snapshot(o.txid, (SELECT s.cur_snap FROM s))
    ORDER BY o.seq
    LIMIT @max_rows::int
), fresh_bounds AS (
    -- The new batch's first seq (fresh holds its first rows) and last seq,
    -- between which its later rounds walk. Like fresh, it reads the batch
    -- once, by transaction (outbox_pending).
    SELECT (SELECT min(f.seq) FROM fresh f) AS lo,
           (SELECT max(o.seq) FROM outbox o
            WHERE o.lane = @lane AND o.published_at IS NULL
              AND o.txid >= (SELECT pg_snapshot_xmin(s.cur_snap) FROM s)
              AND o.txid < (SELECT pg_snapshot_xmax(nb.snap) FROM nb)
              AND pg_visible_in_snapshot(o.txid, (SELECT nb.snap FROM nb))
              AND NOT pg_visible_in_snapshot(o.txid, (SELECT s.cur_snap FROM s))) AS hi
), todo AS (
    SELECT * FROM cur UNION ALL SELECT * FROM fresh
), round AS (
    SELECT count(*)::int AS n, max(todo.seq) AS last FROM todo
), newlane AS (
    -- The lane after this statement; nothing to write when it marked nothing and started no round.
    SELECT CASE WHEN nb.snap IS NULL THEN s.batch_no ELSE s.batch_no + 1 END AS batch_no,
           CASE WHEN nb.snap IS NULL THEN s.prev_snap ELSE s.cur_snap END AS prev_snap,
           coalesce(nb.snap, s.cur_snap) AS cur_snap,
           CASE WHEN nb.snap IS NULL THEN s.done_seq ELSE coalesce(fb.lo - 1, 0) END AS done_seq,
           CASE WHEN nb.snap IS NULL THEN s.last_seq ELSE coalesce(fb.hi, 0) END AS last_seq,
           CASE WHEN nb.snap IS NULL THEN s.bounds_batch ELSE s.batch_no + 1 END AS bounds_batch,
           s.next_seq, round.n, round.last
    FROM s CROSS JOIN round LEFT JOIN nb ON true LEFT JOIN fresh_bounds fb ON nb.snap IS NOT NULL
    WHERE round.n > 0 OR EXISTS (SELECT 1 FROM marked)
), advanced AS (
    UPDATE outbox_lanes l
    SET batch_no = n.batch_no, prev_snap = n.prev_snap, cur_snap = n.cur_snap, done_seq = n.done_seq,
        last_seq = n.last_seq, bounds_batch = n.bounds_batch, next_seq = n.next_seq, round_seq = coalesce(n.last, 0), round_rows = n.n
    FROM newlane n
    WHERE l.lane = @lane
), logged AS (
    INSERT INTO outbox_lane_marks (lane, batch_no, through_seq, cur_xmax, prev_snap, cur_snap, marked_at)
    SELECT @lane, m.batch_no, m.round_seq, pg_snapshot_xmax(m.cur_snap), m.prev_snap, m.cur_snap, now()
    FROM marked m
)
SELECT c.leased, c.marked, c.resent, c.batch_no, c.round_seq, c.next_seq,
       coalesce(o.id, '00000000-0000-0000-0000-000000000000')::uuid AS id,
       coalesce(o.topic, '')::text AS topic, coalesce(o.partition_key, '')::text AS partition_key,
       coalesce(o.event_type, '')::text AS event_type, coalesce(o.aggregate_type, '')::text AS aggregate_type,
       coalesce(o.aggregate_id, '')::text AS aggregate_id, coalesce(o.participant, '')::text AS participant,
       coalesce(o.content_type, '')::text AS content_type, coalesce(o.payload, '')::bytea AS payload,
       coalesce(o.created_at, 'epoch')::timestamptz AS created_at, coalesce(o.seq, 0)::bigint AS seq,
       o.traceparent
FROM (SELECT EXISTS (SELECT 1 FROM lease) AS leased,
             coalesce((SELECT m.round_rows FROM marked m), 0)::bigint AS marked,
             coalesce((SELECT s.resent FROM s), false)::boolean AS resent,
             coalesce((SELECT CASE WHEN nb.snap IS NULL THEN s.batch_no ELSE s.batch_no + 1 END
                       FROM s LEFT JOIN nb ON true), 0)::bigint AS batch_no,
             coalesce((SELECT round.last FROM round), 0)::bigint AS round_seq,
             coalesce((SELECT s.next_seq FROM s), 0)::bigint AS next_seq) c
LEFT JOIN todo o ON true;

-- name: RecordOutboxFailure :exec
UPDATE outbox SET attempts = attempts + 1, last_error = @last_error::text
WHERE id = ANY(@ids::uuid[]);

-- name: OutboxBacklog :one
-- The unpublished rows, lane by lane: those after the lane's batch (not
-- visible in prev_snap) but not among its acknowledged ones. OFFSET 0 keeps
-- the subquery per lane, where the lane's txid bound limits the scan of
-- outbox_pending to the rows since the batch before the lane's last; as a
-- join, the planner read the whole outbox (every row kept for the
-- retention) to hash it, every time the gauges were updated.
SELECT count(*)::bigint AS rows,
       coalesce(extract(epoch FROM now() - min(u.created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox_lanes l
CROSS JOIN LATERAL (
    SELECT o.created_at FROM outbox o
    WHERE o.lane = l.lane AND o.published_at IS NULL AND o.txid >= pg_snapshot_xmin(l.prev_snap)
      AND NOT pg_visible_in_snapshot(o.txid, l.prev_snap)
      AND NOT (pg_visible_in_snapshot(o.txid, l.cur_snap) AND o.seq <= l.done_seq)
    OFFSET 0) u;

-- name: PurgeOutbox :execrows
-- Deletes up to @max_rows rows of the lane published before @before: the
-- ones the lane's last mark older than that covers (and so every earlier
-- mark), and rows from before the insert-only outbox with an old
-- published_at. The DirectoryRequest a write still waits on is kept
-- (StalePendingRequests reads it). Marks older than that last one go too.
WITH bound AS (
    SELECT m.batch_no, m.through_seq, m.cur_xmax, m.prev_snap, m.cur_snap FROM outbox_lane_marks m
    WHERE m.lane = @lane AND m.marked_at < @before::timestamptz
    ORDER BY m.batch_no DESC, m.through_seq DESC
    LIMIT 1
), doomed AS (
    -- The bound's values as scalar subqueries, so that they bound the index scan.
    (SELECT o.id FROM outbox o
     WHERE o.lane = @lane AND o.published_at IS NULL AND o.txid < (SELECT b.cur_xmax FROM bound b)
       AND pg_visible_in_snapshot(o.txid, (SELECT b.cur_snap FROM bound b))
       AND (o.seq <= (SELECT b.through_seq FROM bound b) OR pg_visible_in_snapshot(o.txid, (SELECT b.prev_snap FROM bound b)))
       AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.pending_correlation = o.id)
       AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pending_correlation = o.id)
     LIMIT @max_rows::int)
    UNION ALL
    (SELECT o.id FROM outbox o
     WHERE o.published_at < @before::timestamptz AND o.lane = @lane
       AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.pending_correlation = o.id)
       AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pending_correlation = o.id)
     LIMIT @max_rows::int)
), gone AS (
    DELETE FROM outbox o WHERE o.id IN (SELECT doomed.id FROM doomed) RETURNING 1
), old_marks AS (
    DELETE FROM outbox_lane_marks m USING bound b
    WHERE m.lane = @lane AND (m.batch_no, m.through_seq) < (b.batch_no, b.through_seq)
)
SELECT 1 FROM gone;

-- name: OutboxIdentity :one
SELECT id FROM outbox_identity WHERE singleton;
