package rpc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// These tests prove the outbox's promise end to end at scale: key writes through the API, committed with
// their events in one transaction, reach a Pulsar consumer through the relay exactly once and in the
// order each key's writes committed. (Writes during a broker outage through the API: see the issue 4
// note; eventbus's TestRelayPulsarOutage covers the relay's side.)

// TestAPIWritesReachConsumerExactlyOnceAtScale sends 10,000 key writes (creates, updates, deletes and
// re-creates over a few thousand keys on many accounts) from 16 concurrent callers through the API, with
// the relay publishing to the shared broker and a consumer receiving.
func TestAPIWritesReachConsumerExactlyOnceAtScale(t *testing.T) {
	t.Parallel()
	const writes, callers = 10000, 16
	db := outboxDB(t, "rpcscale")
	topic := "persistent://dict/events/rpc-scale-" + uuid.NewString()
	st, err := newStackTopic(db, redisTestURL(), nil, topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	url := pulsarTestURL()
	if url == "" {
		url = eventbus.DefaultConfig().URL
	}
	bus := outboxBus(t, url)
	got := consumeKeyEvents(t, bus, topic)
	// The stack may run a relay of its own; two relays share the outbox's lanes.
	runRelay(t, db.Pool, bus)

	c := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL)
	t0 := time.Now()
	want := writeMix(t, c, callers, writes, 0)
	t.Logf("%d writes over %d keys from %d callers in %s", writes, len(want), callers, time.Since(t0).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	got.check(t, want, 3*time.Minute)
	outboxDrained(t, db.Pool, time.Minute)
}

// outagePulsarPort is the private broker of TestAPIWritesDuringPulsarOutage, started and stopped with
// `DEPS_PULSAR_PORT=6653 scripts/deps.sh up|down pulsar` (admin on 8083), so the shared one on 6650 keeps
// serving the other tests.
const outagePulsarPort = "6653"

// outboxDB is a migrated database of the test's own, so its relay sees only its rows.
func outboxDB(t *testing.T, name string) *testdb.DB {
	t.Helper()
	db, err := testdb.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// outboxBus is an eventbus client of the broker at url, with its own metrics registry and no logs (the
// outage test's reconnection attempts would fill the output).
func outboxBus(t *testing.T, url string) *eventbus.Client {
	t.Helper()
	cfg := eventbus.DefaultConfig()
	cfg.URL = url
	bus, err := eventbus.NewClient(cfg, eventbus.WithRegisterer(prometheus.NewRegistry()),
		eventbus.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	return bus
}

// runRelay runs an outbox relay until the test ends.
func runRelay(t *testing.T, pool *pgxpool.Pool, bus *eventbus.Client, opts ...eventbus.RelayOption) {
	t.Helper()
	opts = append([]eventbus.RelayOption{eventbus.WithRelayLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eventbus.NewRelay(pool, bus.Pulsar(), opts...).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Relay.Run: %v", err)
		}
	})
}

func outboxUnpublished(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox WHERE published_at IS NULL").Scan(&n); err != nil {
		t.Fatalf("count unpublished outbox rows: %v", err)
	}
	return n
}

func outboxDrained(t *testing.T, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for outboxUnpublished(t, pool) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := outboxUnpublished(t, pool); n > 0 {
		t.Errorf("%d outbox rows still unpublished after %s", n, timeout)
	}
}

// keyPlan is the writes of one key, issued in order by one caller: a create, some updates, maybe a
// delete, and maybe (for keys that are not random EVPs) a second create of the same key and an update.
type keyPlan struct {
	kt       dictv1.KeyType
	updates  int
	del      bool
	recreate bool
}

func (p keyPlan) writes() int {
	n := 1 + p.updates
	if p.del {
		n++
	}
	if p.recreate {
		n += 2
	}
	return n
}

var planKeyTypes = []dictv1.KeyType{dictv1.KeyType_KEY_TYPE_EVP, dictv1.KeyType_KEY_TYPE_EMAIL,
	dictv1.KeyType_KEY_TYPE_PHONE, dictv1.KeyType_KEY_TYPE_CPF}

// writeMix issues exactly total key writes (CreateKey, UpdateKey, DeleteKey) through c from callers
// goroutines and returns, per key, the request ids of its writes in the order they were issued. Each
// key's writes come from one caller, each after the previous one returned, so that is the order they
// committed in. A caller works on up to four keys of one account and owner (a natural person may hold
// five) at a time, interleaving their writes; salt varies the mix between calls. Any failed write fails
// the test.
func writeMix(t *testing.T, c dictv1connect.CoreDictServiceClient, callers, total, salt int) map[string][]string {
	t.Helper()
	// plans[g] are caller g's keys; the j-th has type j%4 so that each group of four (one account) holds
	// an EVP, an email, a phone and its owner's CPF.
	plans := make([][]keyPlan, callers)
	for i, n := 0, 0; n < total; i++ {
		g, j := i%callers, i/callers
		h := i*7 + salt*3
		p := keyPlan{kt: planKeyTypes[j%4], updates: h % 5, del: h%3 != 0}
		p.recreate = p.del && p.kt != dictv1.KeyType_KEY_TYPE_EVP && h%4 == 1
		if left := total - n; p.writes() > left {
			p = keyPlan{kt: p.kt, updates: left - 1}
		}
		plans[g] = append(plans[g], p)
		n += p.writes()
	}

	results := make([]map[string][]string, callers)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[g] = runPlans(t, c, plans[g])
		}()
	}
	wg.Wait()
	want := map[string][]string{}
	for _, r := range results {
		for k, ids := range r {
			want[k] = ids
		}
	}
	return want
}

// runPlans runs one caller's plans, eight keys (two accounts of four) at a time: step k sends the k-th
// write of each of them, then waits until those writes are final (see settle), so a key's next write is
// issued only once its previous one committed and settled.
func runPlans(t *testing.T, c dictv1connect.CoreDictServiceClient, plans []keyPlan) map[string][]string {
	ctx := context.Background()
	issued := map[string][]string{}
	for start := 0; start < len(plans); start += 8 {
		group := plans[start:min(len(plans), start+8)]
		accs := []*dictv1.Account{account(partA), account(partA)}
		cpfs := []string{newCPF(), newCPF()}
		keys := make([]string, len(group))
		for i, p := range group {
			switch p.kt {
			case dictv1.KeyType_KEY_TYPE_EMAIL:
				keys[i] = newEmail()
			case dictv1.KeyType_KEY_TYPE_PHONE:
				keys[i] = newPhone()
			case dictv1.KeyType_KEY_TYPE_CPF:
				keys[i] = cpfs[i/4]
			}
		}
		// An op sends one write of group[i] and returns its request id and answer.
		type op func(i int) (string, *dictv1.Entry, error)
		create := func(i int) (string, *dictv1.Entry, error) {
			req := createReq(group[i].kt, keys[i], accs[i/4], naturalOwner(cpfs[i/4]))
			res, err := c.CreateKey(ctx, req)
			if err != nil {
				return "", nil, fmt.Errorf("CreateKey(%s %q): %w", group[i].kt, keys[i], err)
			}
			return req.GetRequestId(), res.GetEntry(), nil
		}
		update := func(n int) op {
			return func(i int) (string, *dictv1.Entry, error) {
				req := &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: keys[i], KeyType: group[i].kt, Account: accs[i/4],
					Owner: &dictv1.Owner{Name: fmt.Sprintf("Nome Atualizado %d", n)}, Reason: dictv1.Reason_REASON_USER_REQUESTED}
				res, err := c.UpdateKey(ctx, req)
				if err != nil {
					return "", nil, fmt.Errorf("UpdateKey(%q): %w", keys[i], err)
				}
				return req.GetRequestId(), res.GetEntry(), nil
			}
		}
		del := func(i int) (string, *dictv1.Entry, error) {
			req := &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: keys[i], KeyType: group[i].kt, Reason: dictv1.Reason_REASON_USER_REQUESTED}
			res, err := c.DeleteKey(ctx, req)
			if err != nil {
				return "", nil, fmt.Errorf("DeleteKey(%q): %w", keys[i], err)
			}
			return req.GetRequestId(), res.GetEntry(), nil
		}
		ops := make([][]op, len(group))
		isDel := make([][]bool, len(group))
		steps := 0
		for i, p := range group {
			add := func(o op, d bool) { ops[i] = append(ops[i], o); isDel[i] = append(isDel[i], d) }
			add(create, false)
			for u := range p.updates {
				add(update(u), false)
			}
			if p.del {
				add(del, true)
			}
			if p.recreate {
				add(create, false)
				add(update(99), false)
			}
			steps = max(steps, len(ops[i]))
		}
		answers := make([]*dictv1.Entry, len(group))
		for k := range steps {
			for i := range group {
				if k >= len(ops[i]) {
					continue
				}
				id, e, err := ops[i][k](i)
				if err != nil {
					t.Error(err)
					return issued
				}
				answers[i] = e
				if e.GetKey() != "" && group[i].kt != dictv1.KeyType_KEY_TYPE_EVP || keys[i] == "" {
					keys[i] = e.GetKey()
				}
				issued[keys[i]] = append(issued[keys[i]], id)
			}
			for i := range group {
				if k >= len(ops[i]) {
					continue
				}
				key, err := settle(ctx, c, group[i].kt, answers[i], isDel[i][k])
				if err != nil {
					t.Error(err)
					return issued
				}
				if key != keys[i] {
					// A pending EVP: its request id stood for it until the directory generated its key.
					issued[key] = append(issued[key], issued[keys[i]]...)
					delete(issued, keys[i])
					keys[i] = key
				}
			}
		}
	}
	return issued
}

// settle waits until the write that answered e is final: when writes wait for the directory (the entry
// answered PENDING), the next write of the same key is refused until the directory confirmed this one, and
// the key event is written only then. It returns the entry's key (an EVP's, once generated).
func settle(ctx context.Context, c dictv1connect.CoreDictServiceClient, kt dictv1.KeyType, e *dictv1.Entry, deleted bool) (string, error) {
	key := e.GetKey()
	if e.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
		return key, nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		res, err := c.GetKey(ctx, &dictv1.GetKeyRequest{Key: key, KeyType: kt})
		switch {
		case deleted && connect.CodeOf(err) == connect.CodeNotFound:
			return key, nil
		case err != nil:
			return key, fmt.Errorf("GetKey(%q) after a write: %w", key, err)
		case res.GetEntry().GetStatus() == dictv1.EntryStatus_ENTRY_STATUS_PENDING:
			continue
		case res.GetEntry().GetStatus() == dictv1.EntryStatus_ENTRY_STATUS_ACTIVE && !deleted:
			return res.GetEntry().GetKey(), nil
		default:
			return key, fmt.Errorf("key %q settled as %s (%s %s)", key, res.GetEntry().GetStatus(),
				res.GetEntry().GetFailureReason(), res.GetEntry().GetFailureMessage())
		}
	}
	return key, fmt.Errorf("key %q still PENDING after 2 minutes", key)
}

// keyEvents is what a consumer of the key events topic received: deliveries per event id and, per key,
// the request ids of the events in arrival order.
type keyEvents struct {
	mu    sync.Mutex
	seen  map[string]int
	order map[string][]string
	bad   []string
}

func consumeKeyEvents(t *testing.T, bus *eventbus.Client, topic string) *keyEvents {
	t.Helper()
	ke := &keyEvents{seen: map[string]int{}, order: map[string][]string{}}
	consumer, err := bus.NewConsumer([]string{topic}, eventbus.WithSubscription("rpc-test", pulsar.KeyShared), eventbus.WithWorkers(4))
	if err != nil {
		t.Fatal(err)
	}
	handle := func(_ context.Context, d eventbus.Delivery) error {
		var env dictv1.EventEnvelope
		if err := proto.Unmarshal(d.Payload, &env); err != nil {
			return err
		}
		var reqID string
		switch p := env.GetPayload().(type) {
		case *dictv1.EventEnvelope_KeyCreated:
			reqID = p.KeyCreated.GetRequestId()
		case *dictv1.EventEnvelope_KeyUpdated:
			reqID = p.KeyUpdated.GetRequestId()
		case *dictv1.EventEnvelope_KeyDeleted:
			reqID = p.KeyDeleted.GetRequestId()
		}
		ke.mu.Lock()
		defer ke.mu.Unlock()
		if env.GetEventId() != d.EventID || env.GetAggregateId() != d.Key || reqID == "" {
			ke.bad = append(ke.bad, fmt.Sprintf("event %s (property %s) key %q (message key %q) request id %q",
				env.GetEventId(), d.EventID, env.GetAggregateId(), d.Key, reqID))
		}
		ke.seen[d.EventID]++
		ke.order[d.Key] = append(ke.order[d.Key], reqID)
		return nil
	}
	for _, typ := range []string{"KeyCreated", "KeyUpdated", "KeyDeleted"} {
		consumer.Register(typ, handle)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; consumer.Close() })
	return ke
}

// check waits until as many distinct events as want holds arrived (or timeout), and a second more for
// duplicates, then reports every event not received exactly once and every key whose events did not
// arrive in the order its writes were issued.
func (ke *keyEvents) check(t *testing.T, want map[string][]string, timeout time.Duration) {
	t.Helper()
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	deadline := time.Now().Add(timeout)
	for {
		ke.mu.Lock()
		n := len(ke.seen)
		ke.mu.Unlock()
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if len(ke.seen) != total {
		t.Errorf("consumed %d distinct events, want %d", len(ke.seen), total)
	}
	dups := 0
	for id, n := range ke.seen {
		if n != 1 {
			if dups++; dups <= 10 {
				t.Errorf("event %s delivered %d times", id, n)
			}
		}
	}
	if dups > 10 {
		t.Errorf("... %d events delivered more than once in all", dups)
	}
	for i, b := range ke.bad {
		if i == 10 {
			t.Errorf("... %d bad events in all", len(ke.bad))
			break
		}
		t.Errorf("bad event: %s", b)
	}
	var wrong []string
	for k, ids := range want {
		if fmt.Sprint(ke.order[k]) != fmt.Sprint(ids) {
			wrong = append(wrong, k)
		}
	}
	for k := range ke.order {
		if _, ok := want[k]; !ok {
			wrong = append(wrong, k)
		}
	}
	sort.Strings(wrong)
	for i, k := range wrong {
		if i == 10 {
			t.Errorf("... %d keys out of order in all", len(wrong))
			break
		}
		t.Errorf("key %s: events (request ids) arrived as %v, written as %v", k, ke.order[k], want[k])
	}
}
