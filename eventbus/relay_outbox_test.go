package eventbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/sqlc"
)

// insertEvent writes the outbox row of key's n-th event in tx.
func insertEvent(t testing.TB, tx pgx.Tx, topic, key string, n int) {
	t.Helper()
	payload, _ := json.Marshal(event{Key: key, N: n})
	if _, err := tx.Exec(context.Background(), `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload, traceparent)
		VALUES ($1, now(), $2, $3, 'KeyUpdated', 'Entry', $3, '12345678', 'application/json', $4, $5)`,
		uuid.New(), topic, key, payload, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"); err != nil {
		t.Fatalf("insert outbox row: %v", err)
	}
}

func beginWithXid(t testing.TB, pool *pgxpool.Pool) (pgx.Tx, int64) {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	var xid int64
	if err := tx.QueryRow(context.Background(), "SELECT pg_current_xact_id()::text::bigint").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	return tx, xid
}

// TestRelayKeyOrderFollowsCommits: one key's events go out in the order their transactions wrote them,
// which is the order of the xids only when each transaction takes its xid at the key's lock. Here the
// transaction writing the key's later event took its xid first (as a dict write does when it records
// its request id before it waits for the key), and is still open when the earlier event is committed and
// published: its event must come after that one, not before it, and not be lost behind it.
func TestRelayKeyOrderFollowsCommits(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	const key = "order-key"
	const rounds = 5
	n := 0
	// pair writes the key's next two events: the first in a transaction with the higher xid, committed
	// first; then, when published (nil: at once), the second in the one with the lower xid.
	pair := func(published func(n int)) {
		later, lowXid := beginWithXid(t, db.Pool)
		earlier, highXid := beginWithXid(t, db.Pool)
		if lowXid >= highXid {
			t.Fatalf("xids %d, %d: want the first below the second", lowXid, highXid)
		}
		insertEvent(t, earlier, topic, key, n)
		if err := earlier.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		n++
		if published != nil {
			published(n)
		}
		insertEvent(t, later, topic, key, n)
		if err := later.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		n++
	}
	// Before the relay runs: the pairs are published together.
	for range rounds {
		pair(nil)
	}
	startRelay(t, db.Pool, client, eventbus.WithRelayPollInterval(50*time.Millisecond))
	c.check(t, map[string]int{key: n}, 60*time.Second)
	// While it runs: the first event of a pair is published while the transaction with the lower xid
	// is still open.
	for range rounds {
		pair(func(n int) {
			deadline := time.Now().Add(30 * time.Second)
			for c.count() < n && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if c.count() < n {
				t.Fatalf("event %d not published while an older transaction was open", n-1)
			}
		})
	}
	c.check(t, map[string]int{key: n}, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
}

// TestRelayPurgesPublishedRows: rows published longer ago than the retention are deleted, with the lanes'
// marks of them; younger ones and the unpublished stay, and publication times are recorded.
func TestRelayPurgesPublishedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, client, topic, c := relayWorld(t)
	keys := testKeys("p", 20)
	want := insertEvents(t, db.Pool, topic, keys, 500, nil) // n 0..24 per key
	// Two rows from before the insert-only outbox, published 2 h and 1 min ago: never sent again.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload, published_at)
		VALUES (gen_random_uuid(), now(), $1, 'legacy-old', 'KeyUpdated', 'Entry', 'legacy-old', '12345678', 'application/json', '{}', now() - interval '2 hours'),
		       (gen_random_uuid(), now(), $1, 'legacy-new', 'KeyUpdated', 'Entry', 'legacy-new', '12345678', 'application/json', '{}', now() - interval '1 minute')`, topic); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	start := time.Now()
	startRelay(t, db.Pool, client, eventbus.WithRelayRegistry(reg), eventbus.WithRelayBatchSize(50),
		eventbus.WithRelayRetention(time.Hour), eventbus.WithRelayPurgeInterval(100*time.Millisecond))
	c.check(t, want, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)

	var noTime, wrongTime int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE p.published_at IS NULL),
			count(*) FILTER (WHERE p.published_at < $1 OR p.published_at > now())
		FROM outbox_publication p JOIN outbox o ON o.id = p.id WHERE o.partition_key NOT LIKE 'legacy-%'`, start).Scan(&noTime, &wrongTime); err != nil {
		t.Fatal(err)
	}
	if noTime != 0 || wrongTime != 0 {
		t.Errorf("publication times: %d rows without one, %d outside the relay's run", noTime, wrongTime)
	}

	// Everything published so far was published 2 h ago; then 200 more rows are published now. One
	// old row is the request a write still waits on (an entry's pending_correlation): it stays.
	var kept string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO entries (key, key_type, participant, account_number, account_type, account_opened_at,
			owner_type, owner_tax_id, owner_name, status, created_at, key_owned_since, updated_at, request_id,
			cid, cid_w0, cid_w1, cid_w2, cid_w3, pending_op, pending_correlation)
		SELECT 'kept@example.com', 'EMAIL', '12345678', '1', 'CACC', now(), 'NATURAL_PERSON', '12345678901', 'Kept', 'PENDING',
			now(), now(), now(), gen_random_uuid(), repeat('0', 64), 0, 0, 0, 0, 'CREATE', o.id
		FROM outbox o WHERE o.partition_key = $1 ORDER BY o.seq LIMIT 1
		RETURNING pending_correlation::text`, keys[0]).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE outbox_lane_marks SET marked_at = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	want = insertEvents(t, db.Pool, topic, keys, 200, want) // n 25..34
	c.check(t, want, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)

	count := func() (old, young, legacyOld, legacyNew int) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT
				count(*) FILTER (WHERE partition_key NOT LIKE 'legacy-%' AND (convert_from(payload, 'UTF8')::jsonb->>'n')::int < 25 AND id <> $1),
				count(*) FILTER (WHERE partition_key NOT LIKE 'legacy-%' AND (convert_from(payload, 'UTF8')::jsonb->>'n')::int >= 25),
				count(*) FILTER (WHERE partition_key = 'legacy-old'),
				count(*) FILTER (WHERE partition_key = 'legacy-new')
			FROM outbox`, kept).Scan(&old, &young, &legacyOld, &legacyNew); err != nil {
			t.Fatal(err)
		}
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		old, young, legacyOld, legacyNew := count()
		if old == 0 && legacyOld == 0 {
			if young != 200 || legacyNew != 1 {
				t.Errorf("after the purge: %d young rows, %d recent legacy rows; want 200 and 1", young, legacyNew)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not purged: %d old rows, %d old legacy rows left (young %d, recent legacy %d)", old, legacyOld, young, legacyNew)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := metricValue(t, reg, "outbox_purged_total"); n != 500 {
		t.Errorf("outbox_purged_total = %v, want 500 (499 rows and a legacy one)", n)
	}
	var keptAt time.Time
	if err := db.Pool.QueryRow(ctx, "SELECT published_at FROM outbox_publication WHERE id = $1 AND published", kept).Scan(&keptAt); err != nil {
		t.Fatalf("the request a write waits on: %v", err)
	}
	if time.Since(keptAt) < time.Hour {
		t.Errorf("the request a write waits on was published at %s, want over an hour ago", keptAt)
	}
	// Of the old marks, each lane keeps at most its last (the purge's bound); the young rows still have
	// their publication times.
	var oldMarks, lanes, noTimeLeft int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM outbox_lane_marks WHERE marked_at < now() - interval '1 hour'),
			(SELECT count(DISTINCT lane) FROM outbox_lane_marks WHERE marked_at < now() - interval '1 hour'),
			(SELECT count(*) FROM outbox_publication WHERE id <> $1 AND (published_at IS NULL OR published_at < now() - interval '1 hour'))`, kept).Scan(&oldMarks, &lanes, &noTimeLeft); err != nil {
		t.Fatal(err)
	}
	if oldMarks != lanes {
		t.Errorf("%d marks older than the retention over %d lanes, want one per lane", oldMarks, lanes)
	}
	if noTimeLeft != 0 {
		t.Errorf("%d remaining rows without a recent publication time", noTimeLeft)
	}
}

// TestRelayLingerGathersTrickle: rows committed one at a time, 20 ms apart, on one key (one lane). With a
// linger of 300 ms the lane sends the first row at once, then waits after each small round, so the 30
// rows go out in a handful of rounds rather than one round each (a round takes a few milliseconds), in
// key order, each once.
func TestRelayLingerGathersTrickle(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	reg := prometheus.NewRegistry()
	startRelay(t, db.Pool, client, eventbus.WithRelayRegistry(reg), eventbus.WithRelayLinger(300*time.Millisecond))
	const key, rows = "linger-key", 30
	for n := range rows {
		tx, err := db.Pool.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		insertEvent(t, tx, topic, key, n)
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.check(t, map[string]int{key: rows}, 30*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
	rounds := metricValue(t, reg, "outbox_rounds_total")
	if published := metricValue(t, reg, "outbox_published_total"); published != rows {
		t.Errorf("outbox_published_total = %v, want %d", published, rows)
	}
	// 600 ms of commits: the first round at once, then one per linger at most, give or take a slow round.
	if rounds < 1 || rounds > 10 {
		t.Errorf("%d rows went out in %v rounds; with a 300 ms linger, want at most 10", rows, rounds)
	}
}

// TestRelayFinishesBatchOfPreviousVersion: during a rolling deploy a relay of the previous version (before
// schema/00013) may start a lane's batch: it moves the lane's snapshots and sets done_seq to 0, and knows
// nothing of last_seq, which still bounds the batch before. This relay must then send the whole batch,
// not stop at that old bound and count the rest as published.
func TestRelayFinishesBatchOfPreviousVersion(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	keys := []string{"mixed-version-key"}
	stop := startRelay(t, db.Pool, client)
	want := insertEvents(t, db.Pool, topic, keys, 50, nil)
	waitDrained(t, db.Pool, 30*time.Second)
	stop()

	// More rows, then the previous version's start of a batch with them (it died before sending any).
	want = insertEvents(t, db.Pool, topic, keys, 50, want)
	ctx := context.Background()
	var lane int16
	if err := db.Pool.QueryRow(ctx, "SELECT lane FROM outbox WHERE partition_key = $1 LIMIT 1", keys[0]).Scan(&lane); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE outbox_lanes SET batch_no = batch_no + 1, prev_snap = cur_snap,
		cur_snap = pg_current_snapshot(), done_seq = 0, round_seq = 0, round_rows = 0 WHERE lane = $1`, lane); err != nil {
		t.Fatal(err)
	}
	startRelay(t, db.Pool, client)
	c.check(t, want, 30*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
}

// TestRelayPurgeDoesNotHoldUpPublishing: a lane's purge that cannot finish (here a transaction holds a
// lock on the old rows it deletes; in production, a large purge) does not stop the lane's new rows from
// being published, and it completes once the lock is gone. The lanes purge one at a time: with the old
// rows of two lanes locked, one purge waits on the lock and the other for its turn, so the purges hold
// one of the pool's connections, not one per lane.
func TestRelayPurgeDoesNotHoldUpPublishing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, client, topic, c := relayWorld(t)
	// Two keys in different lanes.
	lane := func(key string) int {
		var l int
		if err := db.Pool.QueryRow(ctx, "SELECT abs(hashtext($1)::bigint) % 16", key).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	keys := []string{"purge-blocked-a"}
	for i := 0; len(keys) < 2; i++ {
		if k := fmt.Sprintf("purge-blocked-b%d", i); lane(k) != lane(keys[0]) {
			keys = append(keys, k)
		}
	}
	stop := startRelay(t, db.Pool, client)
	want := insertEvents(t, db.Pool, topic, keys, 40, nil)
	c.check(t, want, 30*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
	stop()

	// The 40 rows were published two hours ago, as far as the purge can tell; a transaction locks them.
	if _, err := db.Pool.Exec(ctx, "UPDATE outbox_lane_marks SET marked_at = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	lock, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	var locked int
	if err := lock.QueryRow(ctx, "SELECT count(*) FROM (SELECT id FROM outbox WHERE partition_key = ANY($1) FOR UPDATE) l", keys).Scan(&locked); err != nil || locked != 40 {
		t.Fatalf("locked %d rows (%v), want 40", locked, err)
	}
	purgesWaiting := func() int {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%PurgeOutbox%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	startRelay(t, db.Pool, client, eventbus.WithRelayRetention(time.Hour), eventbus.WithRelayPurgeInterval(100*time.Millisecond))
	// The lanes' purges run when the lanes start: the first of the two to come waits on the lock.
	waitFor(t, 30*time.Second, "a purge to wait on the lock", func() bool { return purgesWaiting() > 0 })
	want = insertEvents(t, db.Pool, topic, keys, 40, want)
	c.check(t, want, 30*time.Second)
	// Both lanes published meanwhile, and their purges had all that time to start: one waits on the
	// lock, the other behind it.
	if n := purgesWaiting(); n != 1 {
		t.Errorf("%d purge statements wait on the lock, want 1 (one lane purging at a time)", n)
	}

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the old rows to be purged", func() bool {
		var old int
		if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE (convert_from(payload, 'UTF8')::jsonb->>'n')::int < 20").Scan(&old); err != nil {
			t.Fatal(err)
		}
		return old == 0
	})
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
	}
}

// TestOutboxBacklogReadsRecentRowsOnly: the backlog gauges' statement (every second) reads the rows since
// each lane's last batches through outbox_pending, never the whole outbox, which holds every row kept
// for the retention (a day of events by default); and it counts the unpublished rows.
func TestOutboxBacklogReadsRecentRowsOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, client, topic, c := relayWorld(t)
	const published = 20000
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
		SELECT gen_random_uuid(), now(), $1, 'k' || (g % 64), 'KeyUpdated', 'Entry', 'k' || (g % 64), '12345678', 'application/json', '{}'
		FROM generate_series(1, $2::int) g`, topic, published); err != nil {
		t.Fatal(err)
	}
	stop := startRelay(t, db.Pool, client)
	waitDrained(t, db.Pool, 60*time.Second)
	stop()
	waitFor(t, 30*time.Second, "the consumer to have every row", func() bool { return c.count() >= published })
	if _, err := db.Pool.Exec(ctx, "ANALYZE outbox"); err != nil {
		t.Fatal(err)
	}
	insertEvents(t, db.Pool, topic, testKeys("b", 5), 7, nil) // 7 rows not yet published

	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	seqScans := func() int64 {
		t.Helper()
		// This session's counts first, then a fresh read of the table's.
		var n int64
		if _, err := conn.Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'outbox'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := seqScans()
	q := sqlc.New(conn)
	for range 3 {
		b, err := q.OutboxBacklog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b.Rows != 7 || b.OldestAgeSeconds <= 0 {
			t.Errorf("backlog %d rows, oldest %.3f s; want 7 and a positive age", b.Rows, b.OldestAgeSeconds)
		}
	}
	if after := seqScans(); after != before {
		t.Errorf("the backlog statement scanned the whole outbox (%d rows) %d times in 3 runs", published+7, after-before)
	}
}
