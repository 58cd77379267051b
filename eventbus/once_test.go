package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

// onceDB is a fresh migrated database with a table for the handlers' own effects: one row per time an
// event was applied, so a double apply shows as two rows.
func onceDB(t *testing.T) *testdb.DB {
	t.Helper()
	db := relayDB(t)
	if _, err := db.Pool.Exec(context.Background(),
		`CREATE TABLE effects (consumer text NOT NULL, event_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// effect is a handler's own database work, in the transaction PGOnce gives it.
func effect(consumer string) func(ctx context.Context, eventID string) error {
	return func(ctx context.Context, eventID string) error {
		tx, ok := eventbus.TxFromContext(ctx)
		if !ok {
			return errors.New("no transaction in the handler's context")
		}
		_, err := tx.Exec(ctx, `INSERT INTO effects (consumer, event_id) VALUES ($1, $2)`, consumer, eventID)
		return err
	}
}

// effects counts applied effects by event id.
func effects(t *testing.T, pool *pgxpool.Pool, consumer string) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT event_id, count(*)::int FROM effects WHERE consumer = $1 GROUP BY event_id`, consumer)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		got[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestPGOnceAppliesEachEventOnce(t *testing.T) {
	t.Parallel()
	db := onceDB(t)
	ctx := testCtx(t)
	a := eventbus.NewPGOnce(db.Pool, "a")
	b := eventbus.NewPGOnce(db.Pool, "b") // another consumer: its own record
	failure := errors.New("handler failed after its write")

	steps := []struct {
		once    *eventbus.PGOnce
		name    string
		eventID string
		fail    bool
		wantErr error
	}{
		{once: a, name: "a", eventID: "e1"},
		{once: a, name: "a", eventID: "e1"}, // redelivery: skipped
		{once: b, name: "b", eventID: "e1"}, // the other consumer applies it too
		{once: a, name: "a", eventID: "e2", fail: true, wantErr: failure},
		{once: a, name: "a", eventID: "e2"}, // the failed one was rolled back, write and record both
		{once: a, name: "a", eventID: "e2"},
	}
	for i, s := range steps {
		err := s.once.Apply(ctx, s.eventID, func(ctx context.Context) error {
			if err := effect(s.name)(ctx, s.eventID); err != nil {
				return err
			}
			if s.fail {
				return failure
			}
			return nil
		})
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d (%s %s): Apply = %v, want %v", i, s.name, s.eventID, err, s.wantErr)
		}
	}
	if diff := cmp.Diff(map[string]int{"e1": 1, "e2": 1}, effects(t, db.Pool, "a")); diff != "" {
		t.Errorf("consumer a's effects (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"e1": 1}, effects(t, db.Pool, "b")); diff != "" {
		t.Errorf("consumer b's effects (-want +got):\n%s", diff)
	}
	for _, id := range []string{"e1", "e2"} {
		if ok, err := a.Applied(ctx, id); err != nil || !ok {
			t.Errorf("a.Applied(%s) = %v, %v; want true", id, ok, err)
		}
	}
	if ok, err := b.Applied(ctx, "e2"); err != nil || ok {
		t.Errorf("b.Applied(e2) = %v, %v; want false", ok, err)
	}

	// ApplyTx hands the transaction as an argument, the same one as in the context.
	err := a.ApplyTx(ctx, "e3", func(ctx context.Context, tx pgx.Tx) error {
		if inCtx, _ := eventbus.TxFromContext(ctx); inCtx != tx {
			return errors.New("the context holds another transaction")
		}
		_, err := tx.Exec(ctx, `INSERT INTO effects (consumer, event_id) VALUES ('a', 'e3')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := effects(t, db.Pool, "a")["e3"]; got != 1 {
		t.Errorf("e3 applied %d times through ApplyTx, want 1", got)
	}

	// A panicking handler leaves nothing behind.
	func() {
		defer func() { _ = recover() }()
		_ = a.Apply(ctx, "e4", func(ctx context.Context) error {
			_ = effect("a")(ctx, "e4")
			panic("handler bug")
		})
	}()
	if ok, err := a.Applied(ctx, "e4"); err != nil || ok {
		t.Errorf("after a panic, Applied(e4) = %v, %v; want false", ok, err)
	}
	if got := effects(t, db.Pool, "a")["e4"]; got != 0 {
		t.Errorf("after a panic, e4 has %d effects, want 0", got)
	}

	// Pruning forgets a consumer's old records, and only that consumer's.
	n, err := a.Prune(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("Prune forgot %d events of a, want 3 (e1, e2, e3)", n)
	}
	if ok, err := b.Applied(ctx, "e1"); err != nil || !ok {
		t.Errorf("b.Applied(e1) after a's prune = %v, %v; want true", ok, err)
	}
}

// Two consumer processes (two pools: two sets of sessions) get one event at the same moment. The one
// that inserts first holds its transaction open until the other is seen waiting on the row lock; then it
// commits (the waiter skips) or fails (the waiter applies). Either way the event is applied once.
func TestPGOnceRaceBetweenProcesses(t *testing.T) {
	t.Parallel()
	db := onceDB(t)
	for _, firstFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("first fails %v", firstFails), func(t *testing.T) {
			ctx := testCtx(t)
			consumer := fmt.Sprintf("race-%v", firstFails)
			onces := make([]*eventbus.PGOnce, 2)
			for i := range onces {
				pool, err := pgxpool.New(ctx, db.URL)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				onces[i] = eventbus.NewPGOnce(pool, consumer)
			}
			var mu sync.Mutex
			first := true
			calls := 0
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i, once := range onces {
				wg.Go(func() {
					errs[i] = once.Apply(ctx, "e", func(ctx context.Context) error {
						mu.Lock()
						calls++
						isFirst := first
						first = false
						mu.Unlock()
						if err := effect(consumer)(ctx, "e"); err != nil {
							return err
						}
						if !isFirst {
							return nil
						}
						// Hold the record's row until the other process waits for it.
						if err := waitForLockWaiter(ctx, db.Pool); err != nil {
							return err
						}
						if firstFails {
							return errors.New("first apply fails")
						}
						return nil
					})
				})
			}
			wg.Wait()
			failed := 0
			for _, err := range errs {
				if err != nil {
					failed++
				}
			}
			wantCalls, wantFailed := 1, 0
			if firstFails {
				wantCalls, wantFailed = 2, 1
			}
			if calls != wantCalls || failed != wantFailed {
				t.Errorf("apply ran %d times with %d failures (%v), want %d and %d", calls, failed, errs, wantCalls, wantFailed)
			}
			if diff := cmp.Diff(map[string]int{"e": 1}, effects(t, db.Pool, consumer)); diff != "" {
				t.Errorf("effects (-want +got):\n%s", diff)
			}
		})
	}
}

// waitForLockWaiter returns once a session of the database waits on a lock.
func waitForLockWaiter(ctx context.Context, pool *pgxpool.Pool) error {
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no session waited for the record's lock: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Through Pulsar: two consumer processes on one shared subscription, each with its own pool, get events
// that are re-published (the broker cannot tell), fail after writing (redelivered), or are applied but
// not acknowledged (redelivered after the commit). Each event's effect is in the database once.
func TestPGOnceRedeliveredThroughPulsar(t *testing.T) {
	t.Parallel()
	db := onceDB(t)
	ctx := testCtx(t)
	topic := testTopic(t, "pgonce")
	const consumer = "pgonce"

	var mu sync.Mutex
	deliveries := map[string]int{}
	failed := map[string]bool{}
	changed := make(chan struct{}, 1)
	note := func(eventID string) {
		mu.Lock()
		deliveries[eventID]++
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	// failOnce reports whether eventID is to fail now: the first time it is asked.
	failOnce := func(eventID string) bool {
		mu.Lock()
		defer mu.Unlock()
		if failed[eventID] {
			return false
		}
		failed[eventID] = true
		return true
	}
	for i := range 2 {
		client, _ := newClient(t)
		pool, err := pgxpool.New(ctx, db.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		once := eventbus.NewPGOnce(pool, consumer)
		apply := func(ctx context.Context, eventID string, fn func(context.Context) error) error {
			defer note(eventID)
			if err := once.Apply(ctx, eventID, fn); err != nil {
				return err
			}
			if eventID == "ack-lost" && failOnce("ack-lost:after-commit") {
				// Applied and committed, but the consumer dies before acknowledging.
				return errors.New("lost the ack")
			}
			return nil
		}
		c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription(consumer, pulsar.Shared),
			eventbus.WithConsumerName(fmt.Sprintf("%s-%d", consumer, i)),
			eventbus.WithApplyOnce(apply), eventbus.WithDeadLetter("", 0),
			eventbus.WithNackBackoff(20*time.Millisecond, 50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		c.Register("KeyUpdated", func(ctx context.Context, d eventbus.Delivery) error {
			if err := effect(consumer)(ctx, d.EventID); err != nil {
				return err
			}
			if d.EventID == "flaky" && failOnce("flaky") {
				return errors.New("transient failure after the write")
			}
			return nil
		})
		run(t, c)
	}

	p, err := client0(t).NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	published := []string{"dup", "dup", "dup", "flaky", "ack-lost", "plain"}
	for i, eid := range published {
		// Distinct keys spread the events over both consumers.
		if _, err := p.Publish(ctx, eventbus.Message{Key: fmt.Sprintf("k%d", i), Payload: []byte(eid), EventType: "KeyUpdated", EventID: eid}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{"dup": 3, "flaky": 2, "ack-lost": 2, "plain": 1}
	for {
		mu.Lock()
		done := true
		for id, n := range want {
			done = done && deliveries[id] >= n
		}
		state := fmt.Sprint(deliveries)
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("waiting for deliveries %v, got %s", want, state)
		}
	}
	if diff := cmp.Diff(map[string]int{"dup": 1, "flaky": 1, "ack-lost": 1, "plain": 1}, effects(t, db.Pool, consumer)); diff != "" {
		t.Errorf("effects in the database (-want +got):\n%s", diff)
	}
}

// client0 is a client for the test's producer.
func client0(t *testing.T) *eventbus.Client {
	c, _ := newClient(t)
	return c
}
