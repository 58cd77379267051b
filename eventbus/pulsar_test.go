package eventbus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/google/go-cmp/cmp"
)

// These tests talk to the real broker that `scripts/deps.sh up` starts. They prove the two properties the
// outbox relay builds on: a keyed message comes back exactly as it was sent, and the broker drops a
// re-sent message (same producer name, same sequence id).

const (
	defaultPulsarURL      = "pulsar://127.0.0.1:6650"
	defaultPulsarAdminURL = "http://127.0.0.1:8080"
	// The namespace deps.sh creates for core-dict's own events, with deduplication on.
	eventsNamespace = "dict/events"
)

func pulsarURL() string {
	if u := os.Getenv("PULSAR_URL"); u != "" {
		return u
	}
	return defaultPulsarURL
}

func pulsarAdminURL() string {
	if u := os.Getenv("PULSAR_ADMIN_URL"); u != "" {
		return strings.TrimRight(u, "/")
	}
	return defaultPulsarAdminURL
}

const howToStart = "start the local services with `scripts/deps.sh up`"

// newPulsarClient returns a client of the local broker, or fails the test saying how to start it.
func newPulsarClient(t *testing.T) pulsar.Client {
	t.Helper()
	return newPulsarClientAt(t, pulsarURL())
}

// newPulsarClientAt returns a client of the broker at raw (a pulsar:// URL).
func newPulsarClientAt(t *testing.T, raw string) pulsar.Client {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("PULSAR_URL=%q is not a pulsar:// URL: %v", raw, err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 3*time.Second)
	if err != nil {
		t.Fatalf("Pulsar is not reachable at %s (%v): %s", raw, err, howToStart)
	}
	conn.Close()

	client, err := pulsar.NewClient(pulsar.ClientOptions{
		URL:               raw,
		ConnectionTimeout: 5 * time.Second,
		OperationTimeout:  30 * time.Second,
		Logger: pulsarlog.NewLoggerWithSlog(slog.New(slog.NewTextHandler(os.Stderr,
			&slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		t.Fatalf("pulsar.NewClient(%s): %v: %s", raw, err, howToStart)
	}
	t.Cleanup(client.Close)
	return client
}

func nonce(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return hex.EncodeToString(b)
}

// adminGet decodes the JSON answer of GET <admin>/admin/v2/<path>.
func adminGet(t *testing.T, path string, into any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u := pulsarAdminURL() + "/admin/v2/" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Pulsar admin API is not reachable at %s (%v): %s", u, err, howToStart)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d: %s", u, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: decoding %q: %v", u, body, err)
	}
}

type received struct {
	Payload    string
	Key        string
	Properties map[string]string
	Topic      string
}

func TestPulsarPublishConsumeRoundTrip(t *testing.T) {
	t.Parallel()
	client := newPulsarClient(t)
	id := nonce(t)
	topic := "persistent://" + eventsNamespace + "/proof-roundtrip-" + id

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Subscribe first, from the earliest position, so the message cannot be missed.
	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            "proof",
		Type:                        pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", topic, err)
	}
	defer consumer.Close()

	producer, err := client.CreateProducer(pulsar.ProducerOptions{
		Topic:           topic,
		SendTimeout:     30 * time.Second,
		DisableBatching: true,
	})
	if err != nil {
		t.Fatalf("CreateProducer(%s): %v", topic, err)
	}
	defer producer.Close()

	want := received{
		Payload:    `{"type":"key.created","key":"+5561912345678","nonce":"` + id + `"}`,
		Key:        "12345678:+5561912345678:" + id, // the partition key: one key's events stay in order
		Properties: map[string]string{"event-id": id, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Topic:      topic,
	}
	sentID, err := producer.Send(ctx, &pulsar.ProducerMessage{
		Payload:    []byte(want.Payload),
		Key:        want.Key,
		Properties: want.Properties,
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}

	msg, err := consumer.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if err := consumer.Ack(msg); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	got := received{
		Payload:    string(msg.Payload()),
		Key:        msg.Key(),
		Properties: msg.Properties(),
		Topic:      msg.Topic(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received message (-want +got):\n%s", diff)
	}
	if msg.ID().LedgerID() != sentID.LedgerID() || msg.ID().EntryID() != sentID.EntryID() {
		t.Errorf("received message id %v, sent %v", msg.ID(), sentID)
	}
}

func TestPulsarBrokerDeduplication(t *testing.T) {
	t.Parallel()

	// deps.sh switches deduplication on for the namespace (the broker default is on too).
	var nsDedup bool
	adminGet(t, "namespaces/"+eventsNamespace+"/deduplication", &nsDedup)
	if !nsDedup {
		t.Fatalf("deduplication is off on namespace %s: run `scripts/deps.sh up`, which enables it", eventsNamespace)
	}

	client := newPulsarClient(t)
	id := nonce(t)
	local := "proof-dedup-" + id
	topic := "persistent://" + eventsNamespace + "/" + local

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	consumer, err := client.Subscribe(pulsar.ConsumerOptions{
		Topic:                       topic,
		SubscriptionName:            "proof",
		Type:                        pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", topic, err)
	}
	defer consumer.Close()

	// A fixed producer name is what the broker keys its last-sequence-id memory on; the outbox relay uses
	// the outbox row's id as the sequence id.
	producer, err := client.CreateProducer(pulsar.ProducerOptions{
		Topic:           topic,
		Name:            "outbox-relay-" + id,
		SendTimeout:     30 * time.Second,
		DisableBatching: true,
	})
	if err != nil {
		t.Fatalf("CreateProducer(%s): %v", topic, err)
	}
	defer producer.Close()

	send := func(seq int64, payload string) pulsar.MessageID {
		t.Helper()
		msgID, err := producer.Send(ctx, &pulsar.ProducerMessage{
			Payload:    []byte(payload),
			Key:        "key-" + id,
			SequenceID: &seq,
		})
		if err != nil {
			t.Fatalf("Send(seq %d, %q): %v", seq, payload, err)
		}
		return msgID
	}
	first := send(1, "first")
	dup := send(1, "re-sent with the same sequence id")
	second := send(2, "second")

	// The broker acknowledges a duplicate without storing it: its receipt carries no position.
	if dup.LedgerID() != -1 || dup.EntryID() != -1 {
		t.Errorf("duplicate send was stored at %v (first %v, second %v); want it dropped (ledger -1, entry -1)", dup, first, second)
	}

	var got []string
	for range 2 {
		msg, err := consumer.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive after %q: %v", got, err)
		}
		if err := consumer.Ack(msg); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		got = append(got, string(msg.Payload()))
	}
	if diff := cmp.Diff([]string{"first", "second"}, got); diff != "" {
		t.Errorf("consumed payloads (-want +got):\n%s", diff)
	}

	// And the topic holds exactly the two stored entries.
	var stats struct {
		NumberOfEntries int64 `json:"numberOfEntries"`
	}
	adminGet(t, "persistent/"+eventsNamespace+"/"+local+"/internalStats", &stats)
	if stats.NumberOfEntries != 2 {
		t.Errorf("topic %s holds %d entries, want 2 (the duplicate must not be stored)", topic, stats.NumberOfEntries)
	}
}
