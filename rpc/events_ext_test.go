package rpc_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"

	"connectrpc.com/connect"
)

// TestKeyEventsReachConsumer writes keys through the API with the outbox
// relay running (it also carries the writes' DirectoryRequests to the test
// directory), and consumes the key events topic: every confirmed write's
// event arrives exactly once, in order per key. It runs on a database of its own
// so the relay sees only its rows.
func TestKeyEventsReachConsumer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := testdb.Create(ctx, "rpcevents")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	topic := "persistent://dict/events/rpc-test-" + uuid.NewString()
	st, err := newStackTopic(db, redisTestURL(), nil, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()

	cfg := eventbus.DefaultConfig()
	if u := pulsarTestURL(); u != "" {
		cfg.URL = u
	}
	bus, err := eventbus.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- eventbus.NewRelay(db.Pool, bus.Pulsar()).Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	var mu sync.Mutex
	seen := map[string]int{}       // event id -> deliveries
	order := map[string][]string{} // key -> event types in arrival order
	consumer, err := bus.NewConsumer([]string{topic}, eventbus.WithSubscription("rpc-test", pulsar.KeyShared))
	if err != nil {
		t.Fatal(err)
	}
	handle := func(_ context.Context, d eventbus.Delivery) error {
		var env dictv1.EventEnvelope
		if err := proto.Unmarshal(d.Payload, &env); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		seen[d.EventID]++
		order[d.Key] = append(order[d.Key], env.GetEventType())
		return nil
	}
	for _, typ := range []string{"KeyCreated", "KeyUpdated", "KeyDeleted"} {
		consumer.Register(typ, handle)
	}
	consumeCtx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- consumer.Run(consumeCtx) }()
	defer func() { stopConsumer(); <-consumerDone; consumer.Close() }()

	// 40 keys, each created, updated twice and deleted, from 8 goroutines.
	c := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL, connect.WithProtoJSON())
	const keys = 40
	want := map[string][]string{}
	var wmu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < keys; i += 8 {
				e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
				for u := 0; u < 2; u++ {
					if _, err := c.UpdateKey(ctx, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(),
						Account: e.GetAccount(), Owner: &dictv1.Owner{Name: fmt.Sprintf("Nome %d", u)}, Reason: dictv1.Reason_REASON_USER_REQUESTED}); err != nil {
						t.Error(err)
						return
					}
					// The next write waits for the directory to confirm this one.
					if err := settled(c, e.GetKey()); err != nil {
						t.Error(err)
						return
					}
				}
				if _, err := c.DeleteKey(ctx, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED}); err != nil {
					t.Error(err)
					return
				}
				wmu.Lock()
				want[e.GetKey()] = []string{"KeyCreated", "KeyUpdated", "KeyUpdated", "KeyDeleted"}
				wmu.Unlock()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= keys*4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A little longer, so that a duplicate would have time to show up.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != keys*4 {
		t.Errorf("consumed %d distinct events, want %d", len(seen), keys*4)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("per-key order mismatch (-want +got):\n%s", diff)
	}
}

func pulsarTestURL() string { return os.Getenv("PULSAR_URL") }

// TestTraceContextReachesOutbox sends a request inside a caller's trace:
// the outbox row it writes carries that trace, for the relay to pass on.
func TestTraceContextReachesOutbox(t *testing.T) {
	t.Parallel()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	cpf := newCPF()
	body := `{"requestId":"` + uuid.NewString() + `","keyType":"KEY_TYPE_CPF","key":"` + cpf +
		`","account":{"participant":"` + partA + `","number":"55443322","type":"ACCOUNT_TYPE_CACC","openedAt":"2020-01-01T00:00:00Z"},` +
		`"owner":{"type":"OWNER_TYPE_NATURAL_PERSON","taxId":"` + cpf + `","name":"Traced Caller"}}`
	req, _ := http.NewRequest(http.MethodPost, env.server.URL+dictv1connect.CoreDictServiceCreateKeyProcedure, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token(t, partA))
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http1Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	var tp string
	if err := env.db.Pool.QueryRow(context.Background(), "SELECT coalesce(traceparent, '') FROM outbox WHERE aggregate_id = $1", cpf).Scan(&tp); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tp, traceID) {
		t.Errorf("outbox traceparent = %q, want the caller's trace %s", tp, traceID)
	}
}
