package dictsim_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

var db *testdb.DB

func TestMain(m *testing.M) {
	var err error
	db, err = testdb.CreateMigrated(context.Background(), "dictsim", dictsim.Migrate)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dictsim tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	db.Close()
	os.Exit(code)
}

func pulsarURL() string {
	if v := os.Getenv("PULSAR_URL"); v != "" {
		return v
	}
	return "pulsar://127.0.0.1:6650"
}

// clock is the simulator's injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness is one simulator on its own request topic, and a Pulsar client
// for the participants of a test.
type harness struct {
	t        *testing.T
	clock    *clock
	client   pulsar.Client
	producer pulsar.Producer
	topicNS  string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func randDigits(n int) string {
	var sb strings.Builder
	for range n {
		d, _ := rand.Int(rand.Reader, big.NewInt(10))
		sb.WriteByte(byte('0' + d.Int64()))
	}
	return sb.String()
}

func newHarness(t *testing.T, cfg dictsim.Config) *harness {
	t.Helper()
	id := randHex(6)
	h := &harness{t: t, clock: &clock{t: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)}, topicNS: "persistent://lb-conn/dict/dictsim-test-" + id}
	pc := eventbus.DefaultConfig()
	pc.URL = pulsarURL()
	cfg.Pool, cfg.Pulsar, cfg.Now = db.Pool, pc, h.clock.Now
	cfg.RequestTopic = h.topicNS + "-req"
	cfg.Subscription = "dictsim-test"
	sim, err := dictsim.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dictsim.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	h.client, err = pulsar.NewClient(pulsar.ClientOptions{URL: pulsarURL(), OperationTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("pulsar client (start it with `scripts/deps.sh up pulsar`): %v", err)
	}
	h.producer, err = h.client.CreateProducer(pulsar.ProducerOptions{Topic: cfg.RequestTopic, DisableBatching: true})
	if err != nil {
		t.Fatalf("request producer (is Pulsar up? `scripts/deps.sh up pulsar`): %v", err)
	}
	t.Cleanup(func() {
		h.producer.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		sim.Close()
		h.client.Close()
	})
	return h
}

// psp is a participant: an ISPB with its own reply topic.
type psp struct {
	h         *harness
	ispb      string
	topic     string
	responses chan *dictv1.DirectoryResponse
	notices   chan *dictv1.DirectoryNotice
}

func (h *harness) participant() *psp {
	h.t.Helper()
	p := &psp{h: h, ispb: randDigits(8), responses: make(chan *dictv1.DirectoryResponse, 256), notices: make(chan *dictv1.DirectoryNotice, 64)}
	p.topic = h.topicNS + "-res-" + p.ispb
	c, err := h.client.Subscribe(pulsar.ConsumerOptions{Topic: p.topic, SubscriptionName: "psp",
		Type: pulsar.Exclusive, SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest})
	if err != nil {
		h.t.Fatalf("subscribe %s: %v", p.topic, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			msg, err := c.Receive(ctx)
			if err != nil {
				return
			}
			c.Ack(msg)
			switch msg.Properties()[eventbus.PropertyEventType] {
			case dictsim.EventDirectoryResponse:
				r := new(dictv1.DirectoryResponse)
				if err := proto.Unmarshal(msg.Payload(), r); err == nil {
					p.responses <- r
				}
			case dictsim.EventDirectoryNotice:
				n := new(dictv1.DirectoryNotice)
				if err := proto.Unmarshal(msg.Payload(), n); err == nil {
					p.notices <- n
				}
			}
		}
	})
	h.t.Cleanup(func() { cancel(); wg.Wait(); c.Close() })
	return p
}

// send publishes req from p (filling correlation id, participant, reply_to)
// keyed by key, and returns its correlation id.
func (p *psp) send(key string, req *dictv1.DirectoryRequest) string {
	p.h.t.Helper()
	if req.CorrelationId == "" {
		req.CorrelationId = uuid.NewString()
	}
	req.Participant, req.ReplyTo, req.SentAt = p.ispb, p.topic, timestamppb.Now()
	b, err := proto.Marshal(req)
	if err != nil {
		p.h.t.Fatal(err)
	}
	if _, err := p.h.producer.Send(context.Background(), &pulsar.ProducerMessage{Key: key, Payload: b,
		Properties: map[string]string{eventbus.PropertyEventType: dictsim.EventDirectoryRequest, eventbus.PropertyEventID: req.CorrelationId}}); err != nil {
		p.h.t.Fatalf("publish request: %v", err)
	}
	return req.CorrelationId
}

// await waits for the response to correlation id corr.
func (p *psp) await(corr string) *dictv1.DirectoryResponse {
	p.h.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-p.responses:
			if r.GetCorrelationId() == corr {
				return r
			}
		case <-timeout:
			p.h.t.Fatalf("no response to %s within 30s", corr)
		}
	}
}

func (p *psp) call(key string, req *dictv1.DirectoryRequest) *dictv1.DirectoryResponse {
	p.h.t.Helper()
	return p.await(p.send(key, req))
}

func (p *psp) notice() *dictv1.DirectoryNotice {
	p.h.t.Helper()
	select {
	case n := <-p.notices:
		return n
	case <-time.After(30 * time.Second):
		p.h.t.Fatalf("participant %s got no notice within 30s", p.ispb)
		return nil
	}
}

func (p *psp) account(number string) *dictv1.Account {
	return &dictv1.Account{Participant: p.ispb, Branch: "0001", Number: number, Type: dictv1.AccountType_ACCOUNT_TYPE_CACC,
		OpenedAt: timestamppb.New(time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC))}
}

func newCPF() string {
	s := randDigits(9)
	for len(s) < 11 {
		sum := 0
		for i := 0; i < len(s); i++ {
			sum += int(s[i]-'0') * (len(s) + 1 - i)
		}
		d := 11 - sum%11
		if d >= 10 {
			d = 0
		}
		s += string(rune('0' + d))
	}
	return s
}

func newCNPJ() string {
	s := randDigits(12)
	for _, w := range [][]int{{5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}, {6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}} {
		sum := 0
		for i, x := range w {
			sum += int(s[i]-'0') * x
		}
		d := 0
		if r := sum % 11; r >= 2 {
			d = 11 - r
		}
		s += string(rune('0' + d))
	}
	return s
}

func natural(name string) *dictv1.Owner {
	return &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: newCPF(), Name: name}
}

func newPhone() string { return "+55619" + randDigits(8) }
func newEmail() string { return "u" + randHex(5) + "@example.com" }

func createReq(kt dictv1.KeyType, key string, acc *dictv1.Account, owner *dictv1.Owner) *dictv1.DirectoryRequest {
	return &dictv1.DirectoryRequest{RequestId: uuid.NewString(), Operation: &dictv1.DirectoryRequest_CreateEntry{
		CreateEntry: &dictv1.DirCreateEntry{KeyType: kt, Key: key, Account: acc, Owner: owner}}}
}

func wantOK(t *testing.T, r *dictv1.DirectoryResponse) {
	t.Helper()
	if r.GetError() != nil {
		t.Fatalf("refused: %s: %s", r.GetError().GetReason(), r.GetError().GetMessage())
	}
}

func wantReason(t *testing.T, r *dictv1.DirectoryResponse, reason string) {
	t.Helper()
	if got := r.GetError().GetReason(); got != reason {
		t.Fatalf("reason = %q (%s), want %q", got, r.GetError().GetMessage(), reason)
	}
}
