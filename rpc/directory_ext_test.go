package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// The test stacks reach a test double of the central directory over the
// real Pulsar: testDirectory consumes a database's request topic and
// answers every DirectoryRequest on its reply_to, holding the directory's
// entries in memory (every participant's). It accepts writes unless BCB's
// uniqueness rule refuses them, answers lookups and CheckKeys from its
// entries, and never answers a key listed as silent. The lead's end-to-end
// tests use dictsim instead.
type testDirectory struct {
	bus      *eventbus.Client
	consumer *eventbus.Consumer
	cancel   context.CancelFunc
	done     chan struct{}

	mu        sync.Mutex
	producers map[string]*eventbus.Producer
	entries   map[string]*dictv1.Entry
	silent    map[string]bool
	limited   map[string]bool
	requests  map[string]int                       // operation -> requests seen
	sent      map[string]*dictv1.DirectoryResponse // correlation id -> the response sent
	answered  map[string]*dictv1.DirectoryResponse // write request id -> its first answer
	hold      map[string]chan struct{}             // key -> write responses wait until closed
	drop      map[string]bool                      // key -> its next write request is lost
}

// testBus is the package's one Pulsar client (the stacks' relays, links and
// test directories share it).
var testBus = sync.OnceValues(func() (*eventbus.Client, error) {
	cfg := eventbus.DefaultConfig()
	if u := pulsarTestURL(); u != "" {
		cfg.URL = u
	}
	return eventbus.NewClient(cfg, eventbus.WithRegisterer(prometheus.NewRegistry()),
		eventbus.WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil))))
})

// Topics of a test database: the relay's producers are named by topic and
// lane, so two databases never share a topic.
func reqTopic(db *testdb.DB) string { return "persistent://lb-conn/dict/rpc-req-" + db.Name }
func resTopic(db *testdb.DB) string { return "persistent://lb-conn/dict/rpc-res-" + db.Name }

var (
	directoriesMu sync.Mutex
	directories   = map[string]*testDirectory{}
)

// directoryOf returns the test directory of db's topics, started on first use.
func directoryOf(db *testdb.DB) (*testDirectory, error) {
	directoriesMu.Lock()
	defer directoriesMu.Unlock()
	if d, ok := directories[db.Name]; ok {
		return d, nil
	}
	bus, err := testBus()
	if err != nil {
		return nil, err
	}
	cons, err := bus.NewConsumer([]string{reqTopic(db)}, eventbus.WithSubscription("test-directory", pulsar.Shared),
		// Each answer is a synchronous publish: enough workers that the directory keeps up with a
		// backlog (a broker back after an outage delivers hundreds of requests at once).
		eventbus.WithDeadLetter("", 0), eventbus.WithWorkers(32))
	if err != nil {
		return nil, err
	}
	d := &testDirectory{bus: bus, consumer: cons, done: make(chan struct{}),
		producers: map[string]*eventbus.Producer{}, entries: map[string]*dictv1.Entry{},
		silent: map[string]bool{}, limited: map[string]bool{}, requests: map[string]int{},
		sent: map[string]*dictv1.DirectoryResponse{}, answered: map[string]*dictv1.DirectoryResponse{}, drop: map[string]bool{}, hold: map[string]chan struct{}{}}
	cons.Register(dictbus.EventDirectoryRequest, d.handle)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { defer close(d.done); _ = cons.Run(ctx) }()
	directories[db.Name] = d
	return d, nil
}

func closeDirectories() {
	directoriesMu.Lock()
	defer directoriesMu.Unlock()
	for _, d := range directories {
		d.cancel()
		<-d.done
		d.consumer.Close()
		for _, p := range d.producers {
			p.Close()
		}
	}
}

// put registers e in the directory as another participant's entry.
func (d *testDirectory) put(e *dictv1.Entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries[e.GetKey()] = e
}

func (d *testDirectory) setSilent(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.silent[key] = true
}

func (d *testDirectory) count(op string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests[op]
}

// holdWrites makes the directory keep its answers to writes of key until
// the returned function is called.
func (d *testDirectory) holdWrites(key string) func() {
	ch := make(chan struct{})
	d.mu.Lock()
	d.hold[key] = ch
	d.mu.Unlock()
	return func() { close(ch) }
}

func dirErr(reason, msg string) *dictv1.DirectoryError {
	return &dictv1.DirectoryError{Reason: reason, Message: msg}
}

func (d *testDirectory) handle(ctx context.Context, del eventbus.Delivery) error {
	var req dictv1.DirectoryRequest
	if err := proto.Unmarshal(del.Payload, &req); err != nil {
		return err
	}
	resp := &dictv1.DirectoryResponse{CorrelationId: req.GetCorrelationId(), Participant: req.GetParticipant(),
		RequestId: req.GetRequestId(), AnsweredAt: timestamppb.Now()}
	key := del.Key
	var hold chan struct{}
	d.mu.Lock()
	// A write request delivered again (the relay re-sent it, or our answer
	// failed to go out) gets its first answer, as BCB's RequestId rule says.
	if first, ok := d.answered[req.GetRequestId()]; ok && req.GetRequestId() != "" {
		d.mu.Unlock()
		return d.send(ctx, req.GetReplyTo(), key, first)
	}
	if d.drop[key] {
		delete(d.drop, key)
		d.mu.Unlock()
		return nil
	}
	switch op := req.GetOperation().(type) {
	case *dictv1.DirectoryRequest_CreateEntry:
		d.requests["create"]++
		c := op.CreateEntry
		key = c.GetKey()
		if c.GetKeyType() == dictv1.KeyType_KEY_TYPE_EVP {
			key = uuid.NewString()
		}
		hold = d.hold[key]
		if prev, ok := d.entries[key]; ok {
			switch {
			case prev.GetAccount().GetParticipant() == req.GetParticipant():
				resp.Error = dirErr(dict.ReasonEntryAlreadyExists, "the key is already registered")
			case prev.GetOwner().GetTaxId() == c.GetOwner().GetTaxId():
				resp.Error = dirErr(dict.ReasonEntryKeyInCustodyOfDifferentParticipant, "the key is held by another participant for this owner")
			default:
				resp.Error = dirErr(dict.ReasonEntryKeyOwnedByDifferentPerson, "the key is registered for another owner")
			}
			break
		}
		reqID, _ := uuid.Parse(req.GetRequestId())
		e := dict.Entry{KeyType: dict.KeyType(c.GetKeyType()), Key: key,
			Account: dict.EntryFromProto(&dictv1.Entry{Account: c.GetAccount()}).Account,
			Owner:   dict.EntryFromProto(&dictv1.Entry{Owner: c.GetOwner()}).Owner,
			Status:  dict.EntryStatusActive, RequestID: reqID}
		e.CID = dict.CID(reqID, e)
		p := e.Proto()
		d.entries[key] = p
		resp.Result = &dictv1.DirectoryResponse_Entry{Entry: p}
	case *dictv1.DirectoryRequest_UpdateEntry:
		d.requests["update"]++
		u := op.UpdateEntry
		hold = d.hold[u.GetKey()]
		prev, ok := d.entries[u.GetKey()]
		if !ok || prev.GetAccount().GetParticipant() != req.GetParticipant() {
			resp.Error = dirErr(dict.ReasonEntryNotFound, "no entry")
			break
		}
		next := proto.Clone(prev).(*dictv1.Entry)
		next.Account = u.GetAccount()
		next.Owner.Name, next.Owner.TradeName = u.GetOwner().GetName(), u.GetOwner().GetTradeName()
		e := dict.EntryFromProto(next)
		next.Cid = dict.CID(e.RequestID, e)
		d.entries[u.GetKey()] = next
		resp.Result = &dictv1.DirectoryResponse_Entry{Entry: next}
	case *dictv1.DirectoryRequest_DeleteEntry:
		d.requests["delete"]++
		k := op.DeleteEntry.GetKey()
		d.requests["delete "+k]++
		hold = d.hold[k]
		prev, ok := d.entries[k]
		if !ok || prev.GetAccount().GetParticipant() != req.GetParticipant() {
			resp.Error = dirErr(dict.ReasonEntryNotFound, "no entry")
			break
		}
		delete(d.entries, k)
		resp.Result = &dictv1.DirectoryResponse_Deleted{Deleted: &dictv1.DirEntryDeleted{KeyType: prev.GetKeyType(), Key: k, Cid: prev.GetCid()}}
	case *dictv1.DirectoryRequest_GetEntry:
		d.requests["get"]++
		k := op.GetEntry.GetKey()
		d.requests["get "+k]++
		if d.silent[k] {
			d.mu.Unlock()
			return nil
		}
		if d.limited[op.GetEntry.GetPayerId()] {
			resp.Error = &dictv1.DirectoryError{Reason: dict.ReasonRateLimited, Message: "slow down",
				RetryAt: timestamppb.New(time.Now().Add(30 * time.Second))}
			break
		}
		e, ok := d.entries[k]
		if !ok {
			resp.Error = dirErr(dict.ReasonEntryNotFound, "no entry for the key")
			break
		}
		resp.Result = &dictv1.DirectoryResponse_Entry{Entry: e}
	case *dictv1.DirectoryRequest_CheckKeys:
		d.requests["check"]++
		res := &dictv1.DirCheckKeysResult{}
		for _, k := range op.CheckKeys.GetKeys() {
			_, ok := d.entries[k]
			res.Keys = append(res.Keys, &dictv1.KeyExistence{Key: k, HasEntry: ok})
		}
		resp.Result = &dictv1.DirectoryResponse_CheckKeys{CheckKeys: res}
	default:
		resp.Error = dirErr("NotImplemented", "the test directory does not do this")
	}
	d.sent[resp.GetCorrelationId()] = resp
	if req.GetRequestId() != "" {
		d.answered[req.GetRequestId()] = resp
	}
	d.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.send(ctx, req.GetReplyTo(), key, resp)
}

// send publishes resp on topic, as the directory answers.
func (d *testDirectory) send(ctx context.Context, topic, key string, resp *dictv1.DirectoryResponse) error {
	d.mu.Lock()
	p, ok := d.producers[topic]
	if !ok {
		var err error
		if p, err = d.bus.NewProducer(topic); err != nil {
			d.mu.Unlock()
			return err
		}
		d.producers[topic] = p
	}
	d.mu.Unlock()
	b, err := proto.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = p.Publish(ctx, eventbus.Message{Key: key, Payload: b, EventID: uuid.NewString(), EventType: dictbus.EventDirectoryResponse,
		Properties: map[string]string{"content_type": "application/x-protobuf"}})
	return err
}

// resend publishes again the response it sent for correlationID (a
// redelivery, as after a connector restart), under a new message id.
func (d *testDirectory) resend(ctx context.Context, topic, key, correlationID string) error {
	d.mu.Lock()
	resp, ok := d.sent[correlationID]
	d.mu.Unlock()
	if !ok {
		return errors.New("no response sent for " + correlationID)
	}
	return d.send(ctx, topic, key, resp)
}

// awaitEntry polls GetKey until the entry of key has status want (and no
// pending operation) and returns it.
func awaitEntry(t testing.TB, c dictv1connect.CoreDictServiceClient, key string, want dictv1.EntryStatus) *dictv1.Entry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last *dictv1.Entry
	var lastErr error
	for time.Now().Before(deadline) {
		res, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: key})
		if err == nil && res.GetEntry().GetStatus() == want {
			return res.GetEntry()
		}
		if err == nil {
			last = res.GetEntry()
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("entry %s never became %s: last %v, err %v", key, want, last, lastErr)
	return nil
}

// settled waits, without failing the test (for goroutines), until the
// entry of key has no write pending: ACTIVE, FAILED or gone.
func settled(c dictv1connect.CoreDictServiceClient, key string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: key})
		if connect.CodeOf(err) == connect.CodeNotFound || (err == nil && res.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("entry %s still pending after 30 s", key)
}

// awaitGone polls GetKey until key is not found.
func awaitGone(t testing.TB, c dictv1connect.CoreDictServiceClient, key string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: key})
		if connect.CodeOf(err) == connect.CodeNotFound {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("entry %s was never removed", key)
}

func mustUpdate(t testing.TB, c dictv1connect.CoreDictServiceClient, req *dictv1.UpdateKeyRequest) *dictv1.Entry {
	t.Helper()
	res, err := c.UpdateKey(context.Background(), req)
	if err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if res.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
		t.Fatalf("UpdateKey answered %s, want PENDING", res.GetEntry().GetStatus())
	}
	return awaitEntry(t, c, req.GetKey(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
}

func mustDelete(t testing.TB, c dictv1connect.CoreDictServiceClient, key string, reason dictv1.Reason) *dictv1.Entry {
	t.Helper()
	res, err := c.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: key, Reason: reason})
	if err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	awaitGone(t, c, key)
	return res.GetEntry()
}

// TestCreateKeyThroughDirectory: a create answers PENDING, its
// DirectoryRequest leaves through the outbox, and the directory's answer
// makes it ACTIVE; an EVP is found by its request id before and after the
// directory generated its key, and the KeyCreated event is written only
// once the directory confirmed.
func TestCreateKeyThroughDirectory(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	email := newEmail()
	release := dir.holdWrites(email)
	req := createReq(dictv1.KeyType_KEY_TYPE_EMAIL, email, account(partA), naturalOwner(newCPF()))
	res, err := c.CreateKey(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetEntry(); got.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING || got.GetPendingOperation() != dict.PendingCreate {
		t.Fatalf("CreateKey answered %s/%q, want PENDING/CREATE", got.GetStatus(), got.GetPendingOperation())
	}
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'KeyCreated'", email); n != 0 {
		t.Errorf("%d KeyCreated events before the directory answered, want 0", n)
	}
	var topic, ptype, corr string
	if err := env.db.Pool.QueryRow(context.Background(),
		"SELECT topic, event_type, id::text FROM outbox WHERE aggregate_id = $1", email).Scan(&topic, &ptype, &corr); err != nil {
		t.Fatal(err)
	}
	if topic != reqTopic(env.db) || ptype != "DirectoryRequest" {
		t.Errorf("outbox row topic %s type %s, want %s DirectoryRequest", topic, ptype, reqTopic(env.db))
	}
	g, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: email})
	if err != nil || g.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
		t.Fatalf("GetKey while pending: %v %v", g.GetEntry().GetStatus(), err)
	}
	release()
	e := awaitEntry(t, c, email, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if e.GetPendingOperation() != "" || e.GetCid() == "" {
		t.Errorf("active entry: pending %q cid %q", e.GetPendingOperation(), e.GetCid())
	}
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'KeyCreated'", email); n != 1 {
		t.Errorf("%d KeyCreated events after the directory confirmed, want 1", n)
	}

	// EVP: the directory generates the key.
	evpReq := createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))
	res, err = c.CreateKey(context.Background(), evpReq)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetEntry().GetKey() != evpReq.GetRequestId() {
		t.Errorf("pending EVP key = %q, want its request id %s", res.GetEntry().GetKey(), evpReq.GetRequestId())
	}
	evp := awaitEntry(t, c, evpReq.GetRequestId(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if evp.GetKey() == evpReq.GetRequestId() || len(evp.GetKey()) != 36 {
		t.Errorf("active EVP key = %q, want the directory's UUID", evp.GetKey())
	}
	if _, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: evp.GetKey()}); err != nil {
		t.Errorf("GetKey by the directory's EVP key: %v", err)
	}
}

// TestCreateKeyRefusedByDirectory: a key another participant holds for
// another owner is refused by the directory; the entry is FAILED with the
// DICT's reason on GetKey, holds no place in the account's limit, and can
// be created again (replacing the failed attempt) or deleted.
func TestCreateKeyRefusedByDirectory(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	phone := newPhone()
	dir.put(&dictv1.Entry{KeyType: dictv1.KeyType_KEY_TYPE_PHONE, Key: phone, Account: account(partC), Owner: naturalOwner(newCPF()),
		Status: dictv1.EntryStatus_ENTRY_STATUS_ACTIVE})
	res, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_PHONE, phone, account(partA), naturalOwner(newCPF())))
	if err != nil {
		t.Fatal(err)
	}
	if res.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
		t.Fatalf("status %s, want PENDING", res.GetEntry().GetStatus())
	}
	e := awaitEntry(t, c, phone, dictv1.EntryStatus_ENTRY_STATUS_FAILED)
	if e.GetFailureReason() != dict.ReasonEntryKeyOwnedByDifferentPerson || e.GetFailureMessage() == "" {
		t.Errorf("failure %q %q, want %s with a message", e.GetFailureReason(), e.GetFailureMessage(), dict.ReasonEntryKeyOwnedByDifferentPerson)
	}
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type LIKE 'Key%'", phone); n != 0 {
		t.Errorf("%d key events for a refused create, want 0", n)
	}
	// Updating a failed entry: not found; deleting it removes it locally.
	_, err = c.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: phone, Account: e.GetAccount(),
		Owner: &dictv1.Owner{Name: "X"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	del, err := c.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: phone, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	if err != nil || del.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_DELETED {
		t.Fatalf("delete of a failed entry: %v %v", del.GetEntry().GetStatus(), err)
	}
	awaitGone(t, c, phone)
	if n := dir.count("delete " + phone); n != 0 {
		t.Errorf("%d deletes sent to the directory, want 0 (it never held the key)", n)
	}
}

// TestDirectoryResponseAppliedOnce: the directory's response, delivered
// again (a new message, same correlation id), changes nothing twice: one
// KeyCreated event, one confirmation in the audit log, one apply-once row.
func TestDirectoryResponseAppliedOnce(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF())))
	var corr string
	if err := env.db.Pool.QueryRow(context.Background(),
		"SELECT id::text FROM outbox WHERE aggregate_id = $1 AND event_type = 'DirectoryRequest'", e.GetKey()).Scan(&corr); err != nil {
		t.Fatal(err)
	}
	// Also updated since: a late duplicate of the create's response must not undo it.
	upd := mustUpdate(t, c, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Account: e.GetAccount(),
		Owner: &dictv1.Owner{Name: "Nome Novo"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	dir.mu.Lock()
	resp := dir.sent[corr]
	dir.mu.Unlock()
	for range 3 {
		// Over Pulsar, to whichever instance consumes it...
		if err := dir.resend(context.Background(), resTopic(env.db), e.GetKey(), corr); err != nil {
			t.Fatal(err)
		}
		// ...and straight to the service, so that the test knows it ran.
		if err := env.stack.svc.ApplyDirectoryResponse(context.Background(), resp); err != nil {
			t.Fatal(err)
		}
	}
	mustUpdate(t, c, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Account: e.GetAccount(),
		Owner: &dictv1.Owner{Name: "Nome Final"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'KeyCreated'", e.GetKey()); n != 1 {
		t.Errorf("%d KeyCreated events, want 1", n)
	}
	if n := countRows(t, "audit_log", "key = $1 AND action = 'CreateKeyConfirmed'", e.GetKey()); n != 1 {
		t.Errorf("%d create confirmations, want 1", n)
	}
	if n := countRows(t, "processed_events", "consumer = $1 AND event_id = $2", dictbus.ResponsesConsumer, corr); n != 1 {
		t.Errorf("%d apply-once rows for the correlation id, want 1", n)
	}
	got, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetEntry().GetOwner().GetName() != "Nome Final" || upd.GetOwner().GetName() != "Nome Novo" {
		t.Errorf("owner name %q after the redeliveries, want the last update's", got.GetEntry().GetOwner().GetName())
	}
}

// TestRetriedWriteReturnsFirstAnswer: a retried CreateKey (same RequestId,
// same data) returns its first answer, PENDING, even after the directory
// confirmed, and sends nothing more to the directory.
func TestRetriedWriteReturnsFirstAnswer(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	req := createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))
	first, err := c.CreateKey(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	active := awaitEntry(t, c, req.GetRequestId(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	again, err := c.CreateKey(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first.GetEntry(), again.GetEntry()) {
		t.Errorf("retry answered %v, want the first answer %v", again.GetEntry(), first.GetEntry())
	}
	if n := countRows(t, "outbox", "event_type = 'DirectoryRequest' AND aggregate_id = $1", req.GetRequestId()); n != 1 {
		t.Errorf("%d DirectoryRequests for the create, want 1", n)
	}
	if n := countRows(t, "entries", "request_id = $1", active.GetRequestId()); n != 1 {
		t.Errorf("%d entries for the request, want 1", n)
	}
}

// TestUpdateAndDeleteThroughDirectory: an update answers PENDING with the
// entry's current data (GetKey too) until the directory confirms; a second
// write meanwhile is refused; a delete removes the entry once confirmed,
// and the key events follow the confirmations.
func TestUpdateAndDeleteThroughDirectory(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF())))
	release := dir.holdWrites(e.GetKey())
	res, err := c.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(),
		Account: e.GetAccount(), Owner: &dictv1.Owner{Name: "Maria Nova"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	if err != nil {
		t.Fatal(err)
	}
	pending := res.GetEntry()
	if pending.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING || pending.GetPendingOperation() != dict.PendingUpdate ||
		pending.GetOwner().GetName() != e.GetOwner().GetName() || pending.GetCid() != e.GetCid() {
		t.Errorf("pending update answered %s/%q name %q cid %s, want PENDING/UPDATE with the current data",
			pending.GetStatus(), pending.GetPendingOperation(), pending.GetOwner().GetName(), pending.GetCid())
	}
	_, err = c.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeFailedPrecondition, dict.ReasonEntryPendingOperation)
	// A lookup of a key with a pending update is still answered locally.
	lk, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: newCPF(), EndToEndId: newE2E()})
	if err != nil || lk.GetEntry().GetOwner().GetName() != e.GetOwner().GetName() {
		t.Errorf("lookup during the pending update: %v %v", lk.GetEntry().GetOwner().GetName(), err)
	}
	release()
	upd := awaitEntry(t, c, e.GetKey(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if upd.GetOwner().GetName() != "Maria Nova" || upd.GetCid() == e.GetCid() {
		t.Errorf("after confirmation name %q cid %s, want the update applied with a new CID", upd.GetOwner().GetName(), upd.GetCid())
	}
	del := mustDelete(t, c, e.GetKey(), dictv1.Reason_REASON_ACCOUNT_CLOSURE)
	if del.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING || del.GetPendingOperation() != dict.PendingDelete {
		t.Errorf("delete answered %s/%q, want PENDING/DELETE", del.GetStatus(), del.GetPendingOperation())
	}
	var types []string
	rows, err := env.db.Pool.Query(context.Background(), "SELECT event_type FROM outbox WHERE aggregate_id = $1 AND event_type LIKE 'Key%' ORDER BY seq", e.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		types = append(types, s)
	}
	if got := strings.Join(types, ","); got != "KeyCreated,KeyUpdated,KeyDeleted" {
		t.Errorf("key events %s, want KeyCreated,KeyUpdated,KeyDeleted", got)
	}
}

// TestLookupThroughDirectory: a key held by another participant is asked of
// the directory over Pulsar and answered with the masked payer view; a key
// the directory does not hold is NOT_FOUND; the directory's RateLimited is
// RESOURCE_EXHAUSTED with a retry delay; no answer within the deadline is
// UNAVAILABLE; own keys are never sent.
func TestLookupThroughDirectory(t *testing.T) {
	t.Parallel()
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	// The package's stack (reads wait up to 30 s) for the answers; a stack
	// of its own whose reads wait 500 ms for the deadline alone, so that a
	// loaded machine cannot turn a slow answer into a failure.
	c := client(t, partA)
	st, err := newStackOpts(env.db, redisTestURL(), stackOptions{directoryTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	short := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL)

	cpf := newCPF()
	elsewhere := newEmail()
	dir.put(&dictv1.Entry{KeyType: dictv1.KeyType_KEY_TYPE_EMAIL, Key: elsewhere, Account: account(partC),
		Owner: naturalOwner(cpf), Status: dictv1.EntryStatus_ENTRY_STATUS_ACTIVE})
	res, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: elsewhere, PayerId: newCPF(), EndToEndId: newE2E()})
	if err != nil {
		t.Fatal(err)
	}
	want := "***." + cpf[3:6] + "." + cpf[6:9] + "-**"
	if pv := res.GetPayerView(); pv.GetTaxIdMasked() != want || pv.GetKey() != elsewhere || pv.GetName() == "" {
		t.Errorf("payer view %v, want tax id %s", pv, want)
	}
	if res.GetEntry().GetAccount().GetParticipant() != partC {
		t.Errorf("entry participant %s, want %s", res.GetEntry().GetAccount().GetParticipant(), partC)
	}
	if n := dir.count("get " + elsewhere); n != 1 {
		t.Errorf("directory asked %d times, want at least 1", n)
	}

	_, err = c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: newEmail(), PayerId: newCPF(), EndToEndId: newE2E()})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)

	limitedPayer := newCPF()
	dir.mu.Lock()
	dir.limited[limitedPayer] = true
	dir.mu.Unlock()
	_, err = c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: elsewhere, PayerId: limitedPayer, EndToEndId: newE2E()})
	wantErr(t, err, connect.CodeResourceExhausted, dict.ReasonRateLimited)
	if d := retryDelay(err); d <= 0 {
		t.Errorf("retry delay %v, want the directory's", d)
	}

	silent := newEmail()
	dir.setSilent(silent)
	_, err = short.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: silent, PayerId: newCPF(), EndToEndId: newE2E()})
	wantErr(t, err, connect.CodeUnavailable, dict.ReasonUnavailable)

	own := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), legalOwner(newCNPJ(false))))
	if _, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: own.GetKey(), PayerId: newCPF(), EndToEndId: newE2E()}); err != nil {
		t.Fatal(err)
	}
	if n := dir.count("get " + own.GetKey()); n != 0 {
		t.Errorf("own key sent to the directory %d times, want 0", n)
	}
}

// TestCheckKeysThroughDirectory: own keys are answered locally, the others
// by one check_keys request.
func TestCheckKeysThroughDirectory(t *testing.T) {
	t.Parallel()
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	c := client(t, partA)
	own := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF())))
	elsewhere, missing := newEmail(), newEmail()
	dir.put(&dictv1.Entry{KeyType: dictv1.KeyType_KEY_TYPE_EMAIL, Key: elsewhere, Account: account(partC),
		Owner: naturalOwner(newCPF()), Status: dictv1.EntryStatus_ENTRY_STATUS_ACTIVE})
	res, err := c.CheckKeys(context.Background(), &dictv1.CheckKeysRequest{Keys: []string{own.GetKey(), elsewhere, missing}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, k := range res.GetKeys() {
		got[k.GetKey()] = k.GetHasEntry()
	}
	if want := map[string]bool{own.GetKey(): true, elsewhere: true, missing: false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("CheckKeys = %v, want %v", got, want)
	}
}

// TestLostRequestIsSentAgain: the directory never sees a write's first
// request (lost); the service sends it again once it has waited too long
// (3 s in the test stacks), with the same correlation and request ids, and
// the entry becomes ACTIVE.
func TestLostRequestIsSentAgain(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	email := newEmail()
	dir.mu.Lock()
	dir.drop[email] = true
	dir.mu.Unlock()
	if _, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EMAIL, email, account(partA), naturalOwner(newCPF()))); err != nil {
		t.Fatal(err)
	}
	awaitEntry(t, c, email, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'DirectoryRequest'", email); n < 2 {
		t.Errorf("%d DirectoryRequests for the key, want the first and at least one re-send", n)
	}
	if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'KeyCreated'", email); n != 1 {
		t.Errorf("%d KeyCreated events, want 1", n)
	}
}

// TestResendWaitsForPublicationAndBacksOff: a pending write's DirectoryRequest
// is sent again only once it has waited the re-send age since it reached the
// broker, not since it was written: a request written long ago but still in
// the outbox (the broker away) gets no copy, nor does one the relay published
// just now (the backlog draining after an outage, the directory still busy
// with it). Once one is overdue it gets a copy, the next copy waits twice as
// long, and a confirmed write gets none. (Before, a request written more than
// the age ago was copied as soon as it was published, and again every age: a
// broker outage ended in a flood of copies that kept the directory's backlog
// growing, and writes stayed PENDING.)
func TestResendWaitsForPublicationAndBacksOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A database of its own, with no relay or directory link: nothing is published or re-sent
	// but what the test does.
	db := outboxDB(t, "rpcresend")
	svc := dict.NewService(dict.ServiceConfig{Pool: db.App, Participants: []string{partA},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	const age = time.Minute
	resend := func(want int) {
		t.Helper()
		n, err := svc.ResendPending(ctx, age, 100)
		if err != nil {
			t.Fatalf("ResendPending: %v", err)
		}
		if n != want {
			t.Fatalf("ResendPending re-sent %d requests, want %d", n, want)
		}
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	type request struct {
		id        string
		published bool
		payload   []byte
	}
	requests := func(key string) []request {
		t.Helper()
		rows, err := db.Pool.Query(ctx, `SELECT o.id::text, p.published, o.payload FROM outbox o JOIN outbox_publication p ON p.id = o.id
			WHERE o.aggregate_id = $1 AND o.event_type = 'DirectoryRequest' ORDER BY o.seq`, key)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []request
		for rows.Next() {
			var r request
			if err := rows.Scan(&r.id, &r.published, &r.payload); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	in := dict.EntryFromProto(&dictv1.Entry{Account: account(partA), Owner: naturalOwner(newCPF())})
	reqID := uuid.NewString()
	e, err := svc.CreateKey(ctx, dict.Caller{Participant: partA, Subject: "test"}, dict.CreateKeyInput{
		RequestID: reqID, KeyType: dict.KeyTypeEmail, Key: newEmail(), Account: in.Account, Owner: in.Owner})
	if err != nil {
		t.Fatal(err)
	}
	first := requests(e.Key)
	if len(first) != 1 {
		t.Fatalf("%d DirectoryRequests after the create, want 1", len(first))
	}
	// Written ten minutes ago, the broker away since: nothing reached the directory yet.
	exec("UPDATE outbox SET created_at = now() - interval '10 minutes' WHERE id = $1", first[0].id)
	resend(0)
	// Published just now, as the outbox drains: the directory has not had the time to answer.
	markPublished(t, db, first[0].id, 0)
	resend(0)
	// Published longer ago than the age: one copy, the same request.
	markPublished(t, db, first[0].id, 2*age)
	resend(1)
	got := requests(e.Key)
	if len(got) != 2 || got[1].published || !bytes.Equal(got[1].payload, first[0].payload) {
		t.Fatalf("after the re-send: %+v, want the first request published and an unpublished copy of it", got)
	}
	// The copy still in the outbox: another would only queue behind it.
	resend(0)
	// The copy published one and a half ages ago: the second copy waits two.
	markPublished(t, db, got[1].id, 3*age/2)
	resend(0)
	markPublished(t, db, got[1].id, 5*age/2)
	resend(1)
	if got := requests(e.Key); len(got) != 3 {
		t.Fatalf("%d DirectoryRequests after the second re-send, want 3", len(got))
	}

	// Confirmed, the write has nothing left to re-send, however old its requests.
	var corr string
	if err := db.Pool.QueryRow(ctx, "SELECT pending_correlation::text FROM entries WHERE key = $1", e.Key).Scan(&corr); err != nil {
		t.Fatal(err)
	}
	confirmed := e.Proto()
	confirmed.Status = dictv1.EntryStatus_ENTRY_STATUS_ACTIVE
	if err := svc.ApplyDirectoryResponse(ctx, &dictv1.DirectoryResponse{CorrelationId: corr, Participant: partA, RequestId: reqID,
		Result: &dictv1.DirectoryResponse_Entry{Entry: confirmed}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range requests(e.Key) {
		markPublished(t, db, r.id, time.Hour)
	}
	resend(0)
}

// TestResendReadsOnlyPendingWritesRequests: the re-send, which every instance runs every third of the
// re-send age, reaches a pending write's requests through outbox_directory_requests, never by reading
// the whole outbox, and to the pending writes through entries_pending_correlation, never by reading
// every entry: the outbox holds every row kept for the retention and entries every key (here 20,000 of
// each stand for them).
func TestResendReadsOnlyPendingWritesRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := outboxDB(t, "rpcresendscan")
	// One connection, so that this test reads the statistics of the session the re-send ran in.
	cfg := db.App.Config().Copy()
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	svc := dict.NewService(dict.ServiceConfig{Pool: pool, Participants: []string{partA},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
		SELECT gen_random_uuid(), now() - interval '1 hour', 'persistent://public/default/t', 'other-' || g,
			CASE WHEN g % 2 = 0 THEN 'DirectoryRequest' ELSE 'KeyCreated' END, 'Entry', 'other-' || g, $1, 'application/octet-stream', '\x00'
		FROM generate_series(1, 20000) g`, partA); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO entries (key, key_type, participant, account_number, account_type, account_opened_at,
			owner_type, owner_tax_id, owner_name, status, created_at, key_owned_since, updated_at, request_id, cid, cid_w0, cid_w1, cid_w2, cid_w3)
		SELECT 'held' || g || '@example.com', 'EMAIL', $1, '1', 'CACC', now(), 'NATURAL_PERSON', '12345678901', 'Held', 'ACTIVE',
			now(), now(), now(), gen_random_uuid(), repeat('0', 64), 0, 0, 0, 0
		FROM generate_series(1, 20000) g`, partA); err != nil {
		t.Fatal(err)
	}
	in := dict.EntryFromProto(&dictv1.Entry{Account: account(partA), Owner: naturalOwner(newCPF())})
	e, err := svc.CreateKey(ctx, dict.Caller{Participant: partA, Subject: "test"}, dict.CreateKeyInput{
		RequestID: uuid.NewString(), KeyType: dict.KeyTypeEmail, Key: newEmail(), Account: in.Account, Owner: in.Owner})
	if err != nil {
		t.Fatal(err)
	}
	var req string
	if err := db.Pool.QueryRow(ctx, "SELECT pending_correlation::text FROM entries WHERE key = $1", e.Key).Scan(&req); err != nil {
		t.Fatal(err)
	}
	markPublished(t, db, req, time.Hour)
	if _, err := db.Pool.Exec(ctx, "ANALYZE outbox; ANALYZE entries"); err != nil {
		t.Fatal(err)
	}
	seqScans := func() (outbox, entries int64) {
		t.Helper()
		if _, err := pool.Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT coalesce(sum(seq_scan) FILTER (WHERE relname = 'outbox'), 0), coalesce(sum(seq_scan) FILTER (WHERE relname = 'entries'), 0)
			FROM pg_stat_user_tables`).Scan(&outbox, &entries); err != nil {
			t.Fatal(err)
		}
		return outbox, entries
	}
	outbox0, entries0 := seqScans()
	if n, err := svc.ResendPending(ctx, time.Minute, 100); err != nil || n != 1 {
		t.Fatalf("ResendPending = %d, %v; want the pending write's request re-sent once", n, err)
	}
	if outbox, entries := seqScans(); outbox != outbox0 || entries != entries0 {
		t.Errorf("the re-send read the whole outbox %d times and every entry %d times", outbox-outbox0, entries-entries0)
	}
}

// TestLookupAfterKeyBecomesOwn: the entry cache remembers that a key has
// no entry here (most lookups are of other participants' keys), and every
// change of the key drops that: once the key is created here it is
// answered locally, never sent; once deleted it is asked of the directory
// again. Another participant of the same instance still gets the
// directory's answer for it.
func TestLookupAfterKeyBecomesOwn(t *testing.T) {
	t.Parallel()
	dir, err := directoryOf(env.db)
	if err != nil {
		t.Fatal(err)
	}
	a, b := client(t, partA), client(t, partB)
	key := newEmail()
	lookup := func(c dictv1connect.CoreDictServiceClient, ispb string) (*dictv1.LookupKeyResponse, error) {
		e2e := "E" + ispb + newE2E()[9:]
		return c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: key, PayerId: newCPF(), EndToEndId: e2e})
	}
	for i := range 2 {
		_, err := lookup(a, partA)
		wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
		if n := dir.count("get " + key); n != i+1 {
			t.Fatalf("lookup %d of a key held nowhere: directory asked %d times, want %d", i+1, n, i+1)
		}
	}

	// A natural person's key: the directory's answers about it are never
	// cached, so each lookup that is not answered locally reaches it.
	mustCreate(t, a, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, key, account(partA), naturalOwner(newCPF())))
	res, err := lookup(a, partA)
	if err != nil {
		t.Fatalf("lookup of the key once it is A's: %v", err)
	}
	if p := res.GetEntry().GetAccount().GetParticipant(); p != partA {
		t.Fatalf("lookup answered participant %s, want %s", p, partA)
	}
	if n := dir.count("get " + key); n != 2 {
		t.Fatalf("own key sent to the directory: asked %d times in all, want still 2", n)
	}
	// B, served by the same instance, does not hold it: B asks the directory.
	if _, err := lookup(b, partB); err != nil {
		t.Fatalf("B's lookup of A's key: %v", err)
	}
	if n := dir.count("get " + key); n != 3 {
		t.Fatalf("B's lookup of A's key: directory asked %d times in all, want 3", n)
	}

	mustDelete(t, a, key, dictv1.Reason_REASON_USER_REQUESTED)
	_, err = lookup(a, partA)
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	if n := dir.count("get " + key); n != 4 {
		t.Fatalf("lookup after the delete: directory asked %d times in all, want 4", n)
	}
}

// markPublished fakes the relay (schema/00012_outbox_insert_only.sql): outbox row id was published ago.
// If it is published already, the mark that covers it is moved to that time; else its lane's rows
// committed so far are marked published as a batch of their own at that time.
func markPublished(t *testing.T, db *testdb.DB, id string, ago time.Duration) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), `WITH r AS (SELECT o.id, o.lane, o.txid, o.seq, p.published FROM outbox o JOIN outbox_publication p ON p.id = o.id WHERE o.id = $1),
		m AS (SELECT m.lane, m.batch_no, m.through_seq FROM outbox_lane_marks m, r
			WHERE r.published AND m.lane = r.lane AND m.cur_xmax > r.txid AND pg_visible_in_snapshot(r.txid, m.cur_snap)
			  AND (m.through_seq >= r.seq OR pg_visible_in_snapshot(r.txid, m.prev_snap))
			ORDER BY m.cur_xmax, m.batch_no, m.through_seq LIMIT 1),
		moved AS (UPDATE outbox_lane_marks x SET marked_at = now() - $2 * interval '1 second' FROM m
			WHERE (x.lane, x.batch_no, x.through_seq) = (m.lane, m.batch_no, m.through_seq)),
		l AS (SELECT l.lane, l.batch_no, l.cur_snap FROM outbox_lanes l, r WHERE l.lane = r.lane AND NOT r.published),
		lane AS (UPDATE outbox_lanes x SET batch_no = l.batch_no + 1, prev_snap = l.cur_snap, cur_snap = pg_current_snapshot(),
			done_seq = 9223372036854775807, round_seq = 0, round_rows = 0 FROM l WHERE x.lane = l.lane)
		INSERT INTO outbox_lane_marks (lane, batch_no, through_seq, cur_xmax, prev_snap, cur_snap, marked_at)
		SELECT l.lane, l.batch_no + 1, 9223372036854775807, pg_snapshot_xmax(pg_current_snapshot()), l.cur_snap, pg_current_snapshot(),
			now() - $2 * interval '1 second' FROM l`, id, ago.Seconds()); err != nil {
		t.Fatalf("mark %s published: %v", id, err)
	}
}
