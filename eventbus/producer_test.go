package eventbus_test

import (
	"strconv"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lbpay-lab/core-dict/eventbus"
)

func TestPublishSyncAndAsyncThenConsume(t *testing.T) {
	t.Parallel()
	client, reg := newClient(t)
	ctx := testCtx(t)
	topic := testTopic(t, "roundtrip")

	cons, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("test", pulsar.Exclusive), eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	cons.Register(eventbus.EventKeyCreated, s.handle)
	run(t, cons)

	prod, err := client.NewKeyEventProducer()
	if err != nil {
		t.Fatal(err)
	}
	// The key-events producer is bound to the configured topic; this test publishes through a producer of
	// its own topic and checks the wrapper's topic only.
	if prod.Topic() != eventbus.DefaultConfig().TopicKeyEvents {
		t.Errorf("key event producer topic %q, want %q", prod.Topic(), eventbus.DefaultConfig().TopicKeyEvents)
	}
	prod.Close()

	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	sync := eventbus.Message{
		Key: "+5561912345678", Payload: []byte("sync payload"), EventID: "evt-sync", EventType: eventbus.EventKeyCreated,
		Properties: map[string]string{"participant": "12345678"},
	}
	if _, err := p.Publish(ctx, sync); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	async := eventbus.Message{
		Key: "user@example.com", Payload: []byte("async payload"), EventID: "evt-async", EventType: eventbus.EventKeyCreated,
		Properties: map[string]string{"participant": "87654321", "aggregate_type": "DictEntry"},
	}
	errc := make(chan error, 1)
	p.PublishAsync(ctx, async, func(id pulsar.MessageID, err error) { errc <- err })
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("PublishAsync: %v", err)
	}
	if sync.Properties[eventbus.PropertyEventID] != "" {
		t.Errorf("Publish changed the caller's properties: %v", sync.Properties)
	}

	got := s.wait(t, ctx, 2)
	want := []eventbus.Delivery{
		{EventID: "evt-sync", EventType: eventbus.EventKeyCreated, Key: sync.Key, Payload: sync.Payload, Topic: topic,
			Properties: map[string]string{"participant": "12345678", "event_id": "evt-sync", "event_type": "KeyCreated"}},
		{EventID: "evt-async", EventType: eventbus.EventKeyCreated, Key: async.Key, Payload: async.Payload, Topic: topic,
			Properties: map[string]string{"participant": "87654321", "aggregate_type": "DictEntry", "event_id": "evt-async", "event_type": "KeyCreated"}},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(eventbus.Delivery{}, "PublishTime", "MessageID")); diff != "" {
		t.Errorf("deliveries mismatch (-want +got):\n%s", diff)
	}

	if n := testutil.ToFloat64(client.Metrics().Sent(topic)); n != 2 {
		t.Errorf("pulsar_messages_sent_total{topic=%q} = %v, want 2", topic, n)
	}
	if n := testutil.ToFloat64(client.Metrics().Received(topic)); n != 2 {
		t.Errorf("pulsar_messages_received_total{topic=%q} = %v, want 2", topic, n)
	}
	if n, err := testutil.GatherAndCount(reg, "pulsar_publish_latency_seconds", "pulsar_consumer_lag"); err != nil || n != 2 {
		t.Errorf("latency and lag series: %d, %v; want 2", n, err)
	}
}

func TestRepublishWithSameSequenceIDIsDropped(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	id := nonce(t)
	local := "test-dedup-" + id
	topic := "persistent://" + eventsNamespace + "/" + local

	cons, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("test", pulsar.Exclusive), eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	cons.Register("KeyCreated", s.handle)
	run(t, cons)

	p, err := client.NewProducer(topic, eventbus.WithProducerName("relay-"+id))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Name() != "relay-"+id {
		t.Errorf("producer name %q, want relay-%s", p.Name(), id)
	}
	publish := func(seq int64, payload string) pulsar.MessageID {
		t.Helper()
		msgID, err := p.Publish(ctx, eventbus.Message{Key: "k", Payload: []byte(payload), EventType: "KeyCreated",
			EventID: payload, SequenceID: &seq})
		if err != nil {
			t.Fatalf("Publish(seq %d): %v", seq, err)
		}
		return msgID
	}
	publish(1, "first")
	if dup := publish(1, "first again"); dup.LedgerID() != -1 || dup.EntryID() != -1 {
		t.Errorf("republish stored at %v, want it dropped", dup)
	}
	publish(2, "second")

	var got []string
	for _, d := range s.wait(t, ctx, 2) {
		got = append(got, string(d.Payload))
	}
	if diff := cmp.Diff([]string{"first", "second"}, got); diff != "" {
		t.Errorf("payloads (-want +got):\n%s", diff)
	}
	var stats struct {
		NumberOfEntries int64 `json:"numberOfEntries"`
	}
	adminGet(t, "persistent/"+eventsNamespace+"/"+local+"/internalStats", &stats)
	if stats.NumberOfEntries != 2 {
		t.Errorf("topic holds %d entries, want 2", stats.NumberOfEntries)
	}
}

// A relay that crashed after the broker stored a range of events but before it marked them republishes
// an overlapping range, asynchronously, from a new producer with the same name. Each event must be stored
// once: this is why a named producer does not batch (see WithProducerName).
func TestOverlappingAsyncRepublishIsStoredOnce(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := testCtx(t)
	id := nonce(t)
	topic := testTopic(t, "overlap")

	cons, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("test", pulsar.Exclusive), eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	cons.Register("KeyUpdated", s.handle)
	run(t, cons)

	publishRange := func(from, to int64) {
		t.Helper()
		p, err := client.NewProducer(topic, eventbus.WithProducerName("relay-"+id))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		errc := make(chan error, to-from+1)
		for seq := from; seq <= to; seq++ {
			p.PublishAsync(ctx, eventbus.Message{Key: "k" + strconv.FormatInt(seq%3, 10), Payload: []byte(strconv.FormatInt(seq, 10)),
				EventType: "KeyUpdated", EventID: strconv.FormatInt(seq, 10), SequenceID: &seq},
				func(_ pulsar.MessageID, err error) { errc <- err })
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for range to - from + 1 {
			if err := <-errc; err != nil {
				t.Fatalf("PublishAsync: %v", err)
			}
		}
	}
	publishRange(1, 10)
	publishRange(5, 15)
	publishRange(12, 20)
	// A last event, published after the others were acknowledged, marks the end of the topic.
	publishRange(21, 21)

	var got []int64
	for _, d := range s.wait(t, ctx, 21) {
		n, _ := strconv.ParseInt(string(d.Payload), 10, 64)
		got = append(got, n)
	}
	want := make([]int64, 21)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored events (-want +got):\n%s", diff)
	}
}
