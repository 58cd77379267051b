-- +goose Up
-- An insert-only outbox (eventbus/relay.go, issue 4). The relay no longer
-- writes outbox rows: 00003's lane_seq and 00004's lane_batch were each an
-- UPDATE of every row (and a second one set published_at), most of
-- PostgreSQL's work in the relay. What was per row is now per lane and per
-- round, in the style of PgQ's snapshot batches.
--
-- Every row records the transaction that wrote it (txid). A lane is
-- published batch by batch, a batch being the rows whose transactions
-- committed between two snapshots the relay took: visible in cur_snap and
-- not in prev_snap (outbox_lanes). Once the relay has taken cur_snap, the
-- batch's set of rows is fixed for good: every transaction visible in it has
-- ended, and a row that commits later is invisible in it, so it falls in a
-- later batch. Within a batch the rows go out in seq (insert) order, a round
-- (at most the relay's batch size) at a time. This keeps one key's events in
-- commit order: dict serialises a key's writes with row locks, so a later
-- write inserts its row (a higher seq) only after the earlier one committed
-- (in the same batch, or an earlier one). Ordering by txid would not: a
-- transaction may take its xid (its first write) before it waits for the
-- key's lock, behind a transaction with a higher xid.
--
-- Per lane: the batch (batch_no, prev_snap, cur_snap), done_seq (the rows of
-- the batch up to it are acknowledged), the round in flight (round_seq, the
-- last of its round_rows rows; 0 rows: none) committed before it is sent,
-- and next_seq, the Pulsar sequence id of the next row (00003's column). A
-- row's sequence id is next_seq + its position in the round; the round's
-- batches are cut per topic as before. A relay that died after sending
-- re-selects exactly the round's rows (the batch's, after done_seq, up to
-- round_seq) and re-sends the same Pulsar batches, which the broker's
-- deduplication drops. Marking a round advances done_seq and next_seq and
-- appends one row to outbox_lane_marks: one UPDATE and one INSERT per round.
--
-- Rows from before this migration: the ones with published_at set are never
-- sent again. Drain the outbox before migrating (stop writes, let the relay
-- finish): rows still unpublished then are sent again, in the lanes' first
-- batch, under new sequence ids (the broker does not drop those).
ALTER TABLE outbox ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();

DROP INDEX outbox_unsequenced;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN lane_seq, DROP COLUMN lane_batch;
-- A lane's rows by transaction: the batches' rows, the backlog, the purge.
-- Rows written from now on never get a published_at, so they all stay in it
-- until purged.
CREATE INDEX outbox_pending ON outbox (lane, txid, seq) WHERE published_at IS NULL;
-- The rows published before this migration, for the purge (no new row gets in).
CREATE INDEX outbox_published_before ON outbox (published_at) WHERE published_at IS NOT NULL;

ALTER TABLE outbox_lanes
    ADD COLUMN batch_no   bigint      NOT NULL DEFAULT 0,
    -- '1:1:' sees no transaction: the first batch is every unpublished row.
    ADD COLUMN prev_snap  pg_snapshot NOT NULL DEFAULT '1:1:',
    ADD COLUMN cur_snap   pg_snapshot NOT NULL DEFAULT '1:1:',
    ADD COLUMN done_seq   bigint      NOT NULL DEFAULT 0,
    ADD COLUMN round_seq  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN round_rows int         NOT NULL DEFAULT 0;

-- One row per marked round: the rows it published are those of its batch
-- (visible in cur_snap, not in prev_snap) with seq up to through_seq, at
-- marked_at. A row was published by the first mark of its lane (in batch_no,
-- through_seq order) that covers it: see outbox_publication. cur_xmax is
-- cur_snap's xmax, which only grows with batch_no, so that first mark is
-- found through outbox_lane_marks_xmax from the row's txid. Purged with the
-- rows (eventbus.Relay, OUTBOX_RETENTION).
CREATE TABLE outbox_lane_marks (
    lane        smallint    NOT NULL,
    batch_no    bigint      NOT NULL,
    through_seq bigint      NOT NULL,
    cur_xmax    xid8        NOT NULL,
    prev_snap   pg_snapshot NOT NULL,
    cur_snap    pg_snapshot NOT NULL,
    marked_at   timestamptz NOT NULL,
    PRIMARY KEY (lane, batch_no, through_seq)
);
CREATE INDEX outbox_lane_marks_xmax ON outbox_lane_marks (lane, cur_xmax, batch_no, through_seq);
-- The relay's bookkeeping, not participant-owned (no policy; 00010_rls.sql).
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_lane_marks TO coredict_app;

-- Whether and when each outbox row was published (acknowledged by the
-- broker): the row's own published_at (rows from before this migration),
-- else the marked_at of the first mark that covers it ('-infinity' when that
-- mark was purged). security_invoker: the caller's row-level security
-- applies to outbox through the view.
CREATE VIEW outbox_publication WITH (security_invoker = true) AS
SELECT p.id, p.lane, p.txid, p.seq, p.published,
       CASE WHEN p.published THEN coalesce(p.legacy_published_at, (
           SELECT m.marked_at FROM outbox_lane_marks m
           WHERE m.lane = p.lane AND m.cur_xmax > p.txid
             AND pg_visible_in_snapshot(p.txid, m.cur_snap)
             AND (m.through_seq >= p.seq OR pg_visible_in_snapshot(p.txid, m.prev_snap))
           ORDER BY m.cur_xmax, m.batch_no, m.through_seq
           LIMIT 1), '-infinity') END AS published_at
FROM (SELECT o.id, o.lane, o.txid, o.seq, o.published_at AS legacy_published_at,
             o.published_at IS NOT NULL
             OR pg_visible_in_snapshot(o.txid, l.prev_snap)
             OR (pg_visible_in_snapshot(o.txid, l.cur_snap) AND o.seq <= l.done_seq) AS published
      FROM outbox o JOIN outbox_lanes l ON l.lane = o.lane) p;
GRANT SELECT ON outbox_publication TO coredict_app;

-- +goose Down
DROP VIEW outbox_publication;
DROP TABLE outbox_lane_marks;
ALTER TABLE outbox_lanes
    DROP COLUMN round_rows,
    DROP COLUMN round_seq,
    DROP COLUMN done_seq,
    DROP COLUMN cur_snap,
    DROP COLUMN prev_snap,
    DROP COLUMN batch_no;
DROP INDEX outbox_published_before;
DROP INDEX outbox_pending;
-- Rows published since the Up are not marked as such: drain before going down.
ALTER TABLE outbox ADD COLUMN lane_seq bigint, ADD COLUMN lane_batch bigint;
CREATE INDEX outbox_unsequenced ON outbox (lane, seq) WHERE published_at IS NULL AND lane_seq IS NULL;
CREATE INDEX outbox_unpublished ON outbox (lane, lane_seq) WHERE published_at IS NULL AND lane_seq IS NOT NULL;
ALTER TABLE outbox DROP COLUMN txid;
