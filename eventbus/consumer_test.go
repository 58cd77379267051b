package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/eventbus"
)

func TestKeySharedKeepsPerKeyOrder(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	topic := testTopic(t, "order")
	keys := []string{"+5511900000001", "a@example.com", "123e4567-e89b-12d3-a456-426614174000"}
	const perKey = 200

	var mu sync.Mutex
	seen := map[string][]int{}
	total := 0
	all := make(chan struct{})
	handle := func(_ context.Context, d eventbus.Delivery) error {
		n, err := strconv.Atoi(string(d.Payload))
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		seen[d.Key] = append(seen[d.Key], n)
		if total++; total == len(keys)*perKey {
			close(all)
		}
		return nil
	}
	// Two consumers of one key_shared subscription, each with several workers.
	for i := range 2 {
		c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("order", pulsar.KeyShared),
			eventbus.WithConsumerName(fmt.Sprintf("order-%d", i)), eventbus.WithWorkers(4))
		if err != nil {
			t.Fatal(err)
		}
		c.Register("KeyUpdated", handle)
		run(t, c)
	}

	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	errc := make(chan error, len(keys)*perKey)
	for n := range perKey {
		for _, k := range keys {
			p.PublishAsync(ctx, eventbus.Message{Key: k, Payload: []byte(strconv.Itoa(n)), EventType: "KeyUpdated",
				EventID: k + "/" + strconv.Itoa(n)}, func(_ pulsar.MessageID, err error) { errc <- err })
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range len(keys) * perKey {
		if err := <-errc; err != nil {
			t.Fatalf("PublishAsync: %v", err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("handled %d of %d events", total, len(keys)*perKey)
	}
	want := make([]int, perKey)
	for i := range want {
		want[i] = i
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		if diff := cmp.Diff(want, seen[k]); diff != "" {
			t.Errorf("key %s handled out of order (-want +got):\n%s", k, diff)
		}
	}
}

func TestHandlerRegistryRoutesByEventType(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	topicA, topicB := testTopic(t, "route-a"), testTopic(t, "route-b")

	c, err := client.NewConsumer([]string{topicA, topicB}, eventbus.WithSubscription("route", pulsar.Shared))
	if err != nil {
		t.Fatal(err)
	}
	created, deleted := newSink(), newSink()
	c.Register(eventbus.EventKeyCreated, created.handle)
	c.Register(eventbus.EventKeyDeleted, deleted.handle)
	run(t, c)

	pa, err := client.NewProducer(topicA)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := client.NewProducer(topicB)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for _, m := range []struct {
		p        *eventbus.Producer
		typ, id  string
		wantSink *sink
	}{
		{pa, eventbus.EventKeyCreated, "c1", created},
		{pa, "SomethingNobodyHandles", "x1", nil},
		{pb, eventbus.EventKeyDeleted, "d1", deleted},
		{pb, eventbus.EventKeyCreated, "c2", created},
	} {
		if _, err := m.p.Publish(ctx, eventbus.Message{Key: "k", Payload: []byte(m.id), EventType: m.typ, EventID: m.id}); err != nil {
			t.Fatal(err)
		}
	}
	type routed struct{ ID, Type, Topic string }
	collect := func(ds []eventbus.Delivery) map[string]routed {
		out := map[string]routed{}
		for _, d := range ds {
			out[d.EventID] = routed{d.EventID, d.EventType, d.Topic}
		}
		return out
	}
	if diff := cmp.Diff(map[string]routed{
		"c1": {"c1", eventbus.EventKeyCreated, topicA},
		"c2": {"c2", eventbus.EventKeyCreated, topicB},
	}, collect(created.wait(t, ctx, 2))); diff != "" {
		t.Errorf("KeyCreated handler got (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]routed{"d1": {"d1", eventbus.EventKeyDeleted, topicB}},
		collect(deleted.wait(t, ctx, 1))); diff != "" {
		t.Errorf("KeyDeleted handler got (-want +got):\n%s", diff)
	}
}

func TestFailingHandlerSendsEventToDLQ(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	id := nonce(t)
	topic := testTopic(t, "dlq-src")
	dlq := "persistent://core-dict/dlq/test-" + id
	const maxDeliveries = 3

	// Read the dead-letter topic with a plain client, subscribed before anything can land there.
	dlqCons, err := newPulsarClient(t).Subscribe(pulsar.ConsumerOptions{
		Topic: dlq, SubscriptionName: "inspect", Type: pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		t.Fatalf("subscribe to %s: %v", dlq, err)
	}
	defer dlqCons.Close()

	c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("dlq", pulsar.Shared),
		eventbus.WithDeadLetter(dlq, maxDeliveries), eventbus.WithNackBackoff(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var counts []uint32
	c.Register("ClaimCreated", func(_ context.Context, d eventbus.Delivery) error {
		mu.Lock()
		counts = append(counts, d.RedeliveryCount)
		mu.Unlock()
		return errors.New("always fails")
	})
	run(t, c)

	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	props := map[string]string{"participant": "12345678", "aggregate_type": "Claim", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if _, err := p.Publish(ctx, eventbus.Message{Key: "+5561999990000", Payload: []byte("claim " + id),
		EventID: "evt-" + id, EventType: "ClaimCreated", Properties: props}); err != nil {
		t.Fatal(err)
	}

	msg, err := dlqCons.Receive(ctx)
	if err != nil {
		t.Fatalf("nothing reached the dead-letter topic: %v", err)
	}
	dlqCons.Ack(msg)
	if diff := cmp.Diff(received{Payload: "claim " + id, Key: "+5561999990000", Topic: dlq},
		received{Payload: string(msg.Payload()), Key: msg.Key(), Topic: msg.Topic()}); diff != "" {
		t.Errorf("dead-lettered message (-want +got):\n%s", diff)
	}
	// Every property the event was published with is there unchanged; the client adds where it came from
	// (REAL_TOPIC, ORIGIN_MESSAGE_ID).
	wantProps := map[string]string{"event_id": "evt-" + id, "event_type": "ClaimCreated", "REAL_TOPIC": topic}
	for k, v := range props {
		wantProps[k] = v
	}
	gotProps := map[string]string{}
	for k := range wantProps {
		if v, ok := msg.Properties()[k]; ok {
			gotProps[k] = v
		}
	}
	if diff := cmp.Diff(wantProps, gotProps); diff != "" {
		t.Errorf("dead-lettered properties (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]uint32{0, 1, 2}, counts); diff != "" {
		t.Errorf("handler deliveries' redelivery counts (-want +got):\n%s", diff)
	}
}

func TestRedeliveredEventIsAppliedOnce(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	topic := testTopic(t, "once")

	var mem eventbus.MemoryOnce
	var mu sync.Mutex
	deliveries := map[string]int{}
	applied := map[string]int{}
	changed := make(chan struct{}, 1)
	once := func(ctx context.Context, eventID string, apply func(context.Context) error) error {
		mu.Lock()
		deliveries[eventID]++
		mu.Unlock()
		return mem.Apply(ctx, eventID, apply)
	}
	c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("once", pulsar.Shared),
		eventbus.WithApplyOnce(once), eventbus.WithNackBackoff(20*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	failedOnce := false
	c.Register("KeyUpdated", func(_ context.Context, d eventbus.Delivery) error {
		mu.Lock()
		defer func() {
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		}()
		if d.EventID == "flaky" && !failedOnce {
			failedOnce = true
			return errors.New("transient failure before any effect")
		}
		applied[d.EventID]++
		return nil
	})
	run(t, c)

	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// "dup" is published twice (a re-publish the broker could not recognise); "flaky" fails once and
	// comes back.
	for _, eid := range []string{"dup", "dup", "flaky"} {
		if _, err := p.Publish(ctx, eventbus.Message{Key: "k", Payload: []byte(eid), EventType: "KeyUpdated", EventID: eid}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		mu.Lock()
		done := deliveries["dup"] == 2 && applied["flaky"] == 1
		state := fmt.Sprintf("deliveries %v, applied %v", deliveries, applied)
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("waiting: %s", state)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(map[string]int{"dup": 1, "flaky": 1}, applied); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	if deliveries["flaky"] != 2 {
		t.Errorf("flaky was delivered %d times, want 2", deliveries["flaky"])
	}
}

func TestPanickingHandlerIsRedelivered(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	topic := testTopic(t, "panic")
	c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("panic", pulsar.Shared),
		eventbus.WithNackBackoff(20*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	var mu sync.Mutex
	calls := 0
	c.Register("KeyDeleted", func(ctx context.Context, d eventbus.Delivery) error {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			panic("handler bug")
		}
		return s.handle(ctx, d)
	})
	run(t, c)
	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Publish(ctx, eventbus.Message{Key: "k", Payload: []byte("x"), EventType: "KeyDeleted", EventID: "e"}); err != nil {
		t.Fatal(err)
	}
	got := s.wait(t, ctx, 1)
	if got[0].RedeliveryCount != 1 {
		t.Errorf("handled on redelivery %d, want 1 (after the panic)", got[0].RedeliveryCount)
	}
}

func TestRunReturnsWhenConsumerIsClosed(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	c, err := client.NewConsumer([]string{testTopic(t, "close")}, eventbus.WithSubscription("close", pulsar.Shared))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after Close")
	}
}
