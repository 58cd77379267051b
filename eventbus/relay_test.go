package eventbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

func init() {
	// The kill test re-runs this binary as the relay to be killed.
	if os.Getenv("OUTBOX_RELAY_CHILD") != "" {
		relayChild()
	}
}

// relayDB gives the test a fresh migrated database of its own.
func relayDB(t testing.TB) *testdb.DB {
	t.Helper()
	db, err := testdb.Create(context.Background(), "eventbus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// event is what the tests put in an outbox row's payload: the key's n-th event.
type event struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

// insertEvents writes n outbox rows over keys (round robin), as dict's InsertOutbox does, in
// transactions of up to 100 rows, continuing each key's numbering from next (nil: from 0).
func insertEvents(t testing.TB, pool *pgxpool.Pool, topic string, keys []string, n int, next map[string]int) map[string]int {
	t.Helper()
	if next == nil {
		next = map[string]int{}
	}
	ctx := context.Background()
	for start := 0; start < n; start += 100 {
		b := &pgx.Batch{}
		for i := start; i < min(n, start+100); i++ {
			k := keys[i%len(keys)]
			payload, _ := json.Marshal(event{Key: k, N: next[k]})
			next[k]++
			b.Queue(`INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload, traceparent)
				VALUES ($1, now(), $2, $3, 'KeyUpdated', 'Entry', $3, '12345678', 'application/json', $4, $5)`,
				uuid.New(), topic, k, payload, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
			t.Fatalf("insert outbox rows: %v", err)
		}
	}
	return next
}

func testKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-key-%03d", prefix, i)
	}
	return keys
}

// collector counts what a consumer of topic receives, by event id and per key in arrival order.
type collector struct {
	mu     sync.Mutex
	byID   map[string]int
	perKey map[string][]int
	total  int
	bad    []string
}

func subscribe(t testing.TB, client pulsar.Client, topic string) *collector {
	t.Helper()
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            "relay-test",
		Type:                        pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", topic, err)
	}
	c := &collector{byID: map[string]int{}, perKey: map[string][]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := consumer.Receive(ctx)
			if err != nil {
				return
			}
			_ = consumer.Ack(msg)
			var e event
			jerr := json.Unmarshal(msg.Payload(), &e)
			p := msg.Properties()
			c.mu.Lock()
			c.total++
			c.byID[p["event_id"]]++
			switch {
			case jerr != nil:
				c.bad = append(c.bad, fmt.Sprintf("payload %q: %v", msg.Payload(), jerr))
			case msg.Key() != e.Key || p["aggregate_id"] != e.Key || p["event_type"] != "KeyUpdated" ||
				p["content_type"] != "application/json" || p["traceparent"] == "":
				c.bad = append(c.bad, fmt.Sprintf("message key %q properties %v for %+v", msg.Key(), p, e))
			default:
				c.perKey[e.Key] = append(c.perKey[e.Key], e.N)
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; consumer.Close() })
	return c
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// check waits until want messages arrived (or timeout), then a quiet second more for duplicates, and
// reports every event not received exactly once and every key whose events came out of order.
func (c *collector) check(t testing.TB, want map[string]int, timeout time.Duration) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	deadline := time.Now().Add(timeout)
	for c.count() < total && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total != total {
		t.Errorf("received %d messages, want %d", c.total, total)
	}
	for _, b := range c.bad {
		t.Errorf("bad message: %s", b)
	}
	for id, n := range c.byID {
		if n != 1 {
			t.Errorf("event %s received %d times", id, n)
		}
	}
	wantSeq := map[string][]int{}
	for k, n := range want {
		for i := range n {
			wantSeq[k] = append(wantSeq[k], i)
		}
	}
	if diff := cmp.Diff(wantSeq, c.perKey); diff != "" {
		t.Errorf("per-key event order (-want +got):\n%s", diff)
	}
}

// startRelay runs a relay until the test ends (or stop is called).
func startRelay(t testing.TB, pool *pgxpool.Pool, client pulsar.Client, opts ...eventbus.RelayOption) (stop func()) {
	t.Helper()
	opts = append([]eventbus.RelayOption{
		eventbus.WithRelayLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		eventbus.WithRelayPollInterval(200 * time.Millisecond),
	}, opts...)
	r := eventbus.NewRelay(pool, client, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Relay.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// unpublished counts the outbox rows not yet published (acknowledged by the broker and marked).
func unpublished(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox_publication WHERE NOT published").Scan(&n); err != nil {
		t.Fatalf("count unpublished: %v", err)
	}
	return n
}

func waitDrained(t testing.TB, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for unpublished(t, pool) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := unpublished(t, pool); n > 0 {
		t.Errorf("%d outbox rows still unpublished after %s", n, timeout)
	}
}

// relayWorld is a relay test's fresh database, client of the shared broker, topic, and consumer of the
// topic (subscribed before anything is published).
func relayWorld(t *testing.T) (*testdb.DB, pulsar.Client, string, *collector) {
	t.Helper()
	db := relayDB(t)
	client := newPulsarClient(t)
	topic := relayTopic(t)
	return db, client, topic, subscribe(t, client, topic)
}

func relayTopic(t testing.TB) string {
	return "persistent://" + eventsNamespace + "/relay-test-" + nonce(t.(*testing.T))
}

func TestRelayPublishesEachEventOnceInKeyOrder(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	keys := testKeys("a", 50)

	// Half before the relay starts, half while it runs (woken by notifications).
	want := insertEvents(t, db.Pool, topic, keys, 1000, nil)
	reg := prometheus.NewRegistry()
	bus, err := eventbus.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	startRelay(t, db.Pool, client, eventbus.WithRelayRegistry(reg), eventbus.WithRelayBatchSize(200), eventbus.WithRelayMetrics(bus))
	want = insertEvents(t, db.Pool, topic, keys, 1000, want)

	c.check(t, want, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
	if published := metricValue(t, reg, "outbox_published_total"); published != 2000 {
		t.Errorf("outbox_published_total = %v, want 2000", published)
	}
	// The seed's pulsar_* series count the relay's sends, under the topic.
	if sent := metricValue(t, reg, "pulsar_messages_sent_total"); sent != 2000 {
		t.Errorf("pulsar_messages_sent_total = %v, want 2000", sent)
	}
	if n := metricValue(t, reg, "pulsar_publish_latency_seconds"); n != 2000 {
		t.Errorf("pulsar_publish_latency_seconds has %v samples, want 2000", n)
	}
	// Every message in the Pulsar batch the relay cut for it, at its place.
	if splits := metricValue(t, reg, "outbox_batch_splits_total"); splits != 0 {
		t.Errorf("outbox_batch_splits_total = %v, want 0", splits)
	}
}

func TestRelayTwoInstancesPublishEachEventOnce(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	keys := testKeys("b", 40)

	want := insertEvents(t, db.Pool, topic, keys, 1000, nil)
	// Two relays over the same rows, each allowed 10 of the 16 lanes, so they contend for some.
	startRelay(t, db.Pool, client, eventbus.WithRelayMaxLanes(10), eventbus.WithRelayBatchSize(100))
	startRelay(t, db.Pool, client, eventbus.WithRelayMaxLanes(10), eventbus.WithRelayBatchSize(100))
	want = insertEvents(t, db.Pool, topic, keys, 1000, want)

	c.check(t, want, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)

	var owners int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(DISTINCT owner) FROM outbox_lanes WHERE lease_until > now()").Scan(&owners); err != nil {
		t.Fatal(err)
	}
	if owners != 2 {
		t.Errorf("%d relays hold lanes, want 2 (both working)", owners)
	}
}

// relayChild is the child process of TestRelayKilledMidBatch: a relay with a short lease that runs until
// it is killed.
func relayChild() {
	pool, err := pgxpool.New(context.Background(), os.Getenv("OUTBOX_RELAY_DB"))
	if err != nil {
		panic(err)
	}
	client, err := pulsar.NewClient(pulsar.ClientOptions{URL: pulsarURL(), Logger: pulsarlog.DefaultNopLogger()})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := eventbus.NewRelay(pool, client,
		eventbus.WithRelayOwner("child"),
		eventbus.WithRelayLeaseTTL(3*time.Second),
		eventbus.WithRelayBatchSize(20),
		eventbus.WithRelayLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	_ = r.Run(ctx)
	os.Exit(0)
}

func TestRelayKilledMidBatch(t *testing.T) {
	t.Parallel()
	db, client, topic, c := relayWorld(t)
	keys := testKeys("c", 50)
	want := insertEvents(t, db.Pool, topic, keys, 3000, nil)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "OUTBOX_RELAY_CHILD=1", "OUTBOX_RELAY_DB="+db.URL)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// Kill it once it has published some but not all rows.
	deadline := time.Now().Add(60 * time.Second)
	for c.count() < 300 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var sent, marked int
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM outbox_publication WHERE published) + (SELECT sum(round_rows) FROM outbox_lanes),
		        (SELECT count(*) FROM outbox_publication WHERE published)`).Scan(&sent, &marked); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	var stats struct {
		NumberOfEntries int64 `json:"numberOfEntries"`
	}
	local := topic[len("persistent://"+eventsNamespace+"/"):]
	adminGet(t, "persistent/"+eventsNamespace+"/"+local+"/internalStats", &stats)
	t.Logf("killed the relay: %d entries (batches) stored by the broker, %d rows in rounds taken, %d marked published", stats.NumberOfEntries, sent, marked)
	if marked == 3000 {
		t.Fatal("the child relay finished before it was killed; the test proved nothing")
	}

	// A new relay takes the lanes over once the dead one's leases expire.
	startRelay(t, db.Pool, client, eventbus.WithRelayOwner("successor"))
	c.check(t, want, 60*time.Second)
	waitDrained(t, db.Pool, 10*time.Second)
	// The broker stored each event once: the successor's re-sends of rows the child sent but never
	// marked were dropped by deduplication, not just filtered by the consumer. A fresh reader from the
	// start of the topic sees every message the broker holds.
	if n := storedMessages(t, client, topic); n != 3000 {
		t.Errorf("topic holds %d messages, want 3000", n)
	}
}

// storedMessages counts the messages topic holds, read from its start.
func storedMessages(t testing.TB, client pulsar.Client, topic string) int {
	t.Helper()
	reader, err := client.CreateReader(pulsar.ReaderOptions{Topic: topic, StartMessageID: pulsar.EarliestMessageID()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if !reader.HasNext() {
			return n
		}
		if _, err := reader.Next(ctx); err != nil {
			t.Fatalf("reading %s: %v", topic, err)
		}
		n++
	}
}

// outagePulsarPort is the private broker of TestRelayPulsarOutage: `DEPS_PULSAR_PORT=6652 scripts/deps.sh`
// starts and stops it (admin on 8082) without touching the shared one on 6650 that the other tests use.
const outagePulsarPort = "6652"

// privatePulsar runs `DEPS_PULSAR_PORT=port scripts/deps.sh up|down pulsar`.
func privatePulsar(port, action string) error {
	_, file, _, _ := runtime.Caller(0)
	deps := filepath.Join(filepath.Dir(file), "..", "scripts", "deps.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, deps, action, "pulsar")
	cmd.Env = append(os.Environ(), "DEPS_PULSAR_PORT="+port)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("DEPS_PULSAR_PORT=%s scripts/deps.sh %s pulsar: %v\n%s", port, action, err, out)
	}
	return nil
}

// TestRelayPulsarOutage stops and starts a private broker of its own, so it runs in parallel with the
// tests on the shared one; the private broker is stopped when it ends.
func TestRelayPulsarOutage(t *testing.T) {
	t.Parallel()
	// deps.sh up is idempotent and waits until the broker answers.
	if err := privatePulsar(outagePulsarPort, "up"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := privatePulsar(outagePulsarPort, "down"); err != nil {
			t.Errorf("stopping the private Pulsar: %v", err)
		}
	})
	db := relayDB(t)
	client := newPulsarClientAt(t, "pulsar://127.0.0.1:"+outagePulsarPort)
	topic := relayTopic(t)
	c := subscribe(t, client, topic)
	keys := testKeys("d", 30)
	reg := prometheus.NewRegistry()
	startRelay(t, db.Pool, client, eventbus.WithRelayRegistry(reg))
	want := insertEvents(t, db.Pool, topic, keys, 300, nil)
	waitDrained(t, db.Pool, 30*time.Second)

	if err := privatePulsar(outagePulsarPort, "down"); err != nil {
		t.Fatal(err)
	}
	// Writes go on while the broker is away; each insert succeeds and the backlog grows.
	for range 5 {
		want = insertEvents(t, db.Pool, topic, keys, 100, want)
		time.Sleep(300 * time.Millisecond)
	}
	if n := unpublished(t, db.Pool); n != 500 {
		t.Errorf("%d rows unpublished while Pulsar is down, want 500", n)
	}
	time.Sleep(1500 * time.Millisecond) // a poll of the gauges
	if got := metricValue(t, reg, "outbox_backlog"); got < 400 {
		t.Errorf("outbox_backlog = %v while Pulsar is down, want about 500", got)
	}
	if err := privatePulsar(outagePulsarPort, "up"); err != nil {
		t.Fatal(err)
	}
	want = insertEvents(t, db.Pool, topic, keys, 100, want)
	// Generous: after the broker returns, a lane may first sit out a send wait (30 s) and its backoff.
	c.check(t, want, 3*time.Minute)
	waitDrained(t, db.Pool, 30*time.Second)
}

// metricValue reads a gauge or counter of reg, or a histogram's sample count (its first series').
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
