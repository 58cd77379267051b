package dictbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// The claim tests run the whole path: two core-dict stacks (participants A
// and B, each with its own database, outbox relay and directory link, served
// over HTTP), and dictsim, the simulated central DICT, in-process, all over
// the real PostgreSQL and Pulsar. One clock drives the services and the
// simulator; tests move it to pass the claim deadlines.

const (
	ispbA = "11110000"
	ispbB = "22220000"
)

var apiSecret = []byte("claims-test-secret-0123456789abcdef")

// clock is the injectable clock of the services and the simulator.
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

// pspStack is one participant's core-dict.
type pspStack struct {
	ispb   string
	db     *testdb.DB
	svc    *dict.Service
	srv    *httptest.Server
	client dictv1connect.CoreDictServiceClient

	reqTopic, resTopic string
}

type world struct {
	clock *clock
	a, b  *pspStack
}

// testLogger discards logs unless CLAIMS_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CLAIMS_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

func pulsarURL() string {
	if v := os.Getenv("PULSAR_URL"); v != "" {
		return v
	}
	return "pulsar://127.0.0.1:6650"
}

func randDigits(n int) string {
	var sb strings.Builder
	for range n {
		d, _ := rand.Int(rand.Reader, big.NewInt(10))
		sb.WriteByte(byte('0' + d.Int64()))
	}
	return sb.String()
}

// newWorld starts the simulator and the two stacks on topics of their own.
func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{clock: &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}}
	ns := "persistent://lb-conn/dict/claims-test-" + randDigits(10)
	reqTopic := ns + "-req"
	resTopic := func(ispb string) string { return ns + "-res-" + ispb }

	simDB, err := testdb.CreateMigrated(ctx, "claimsim", dictsim.Migrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(simDB.Close)
	pc := eventbus.DefaultConfig()
	pc.URL = pulsarURL()
	sim, err := dictsim.New(ctx, dictsim.Config{
		Pool: simDB.Pool, Pulsar: pc, RequestTopic: reqTopic, Subscription: "dictsim",
		NoticeTopics: map[string]string{ispbA: resTopic(ispbA), ispbB: resTopic(ispbB)},
		Now:          w.clock.Now, Logger: testLogger(),
	})
	if err != nil {
		t.Fatalf("dictsim.New (is Pulsar up? `scripts/deps.sh up pulsar`): %v", err)
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(simCtx) }()
	t.Cleanup(func() {
		stopSim()
		if err := <-simDone; err != nil {
			t.Errorf("dictsim Run: %v", err)
		}
		sim.Close()
	})

	bus, err := eventbus.NewClient(pc, eventbus.WithRegisterer(prometheus.NewRegistry()),
		eventbus.WithLogger(testLogger()))
	if err != nil {
		t.Fatalf("Pulsar client (start it with `scripts/deps.sh up pulsar`): %v", err)
	}
	t.Cleanup(bus.Close)
	w.a = newPSP(t, w, bus, ispbA, reqTopic, resTopic(ispbA))
	// The relay names its producers by topic and lane (the broker's
	// deduplication key), so two databases cannot relay to the same topic
	// name: B names the same topic in Pulsar's short form.
	w.b = newPSP(t, w, bus, ispbB, strings.TrimPrefix(reqTopic, "persistent://"), resTopic(ispbB))
	return w
}

func newPSP(t *testing.T, w *world, bus *eventbus.Client, ispb, reqTopic, resTopic string) *pspStack {
	t.Helper()
	ctx := context.Background()
	db, err := testdb.Create(ctx, "claims_"+ispb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	logger := testLogger()
	link, err := dictbus.New(bus, db.App, dictbus.Config{
		RequestTopic: reqTopic, ResponseTopic: resTopic,
		ReplyTopic:   dictbus.ReplyTopic(resTopic, "i1"),
		Subscription: "core-dict", Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc := dict.NewService(dict.ServiceConfig{
		Pool: db.App, Participants: []string{ispb}, Logger: logger, Now: w.clock.Now, Directory: link.Directory(),
		KeyEventsTopic:        "persistent://dict/events/claims-test-keys-" + db.Name,
		ClaimEventsTopic:      "persistent://dict/events/claims-test-claims-" + db.Name,
		DirectoryRequestTopic: reqTopic, DirectoryReplyTo: resTopic, ResponseOnce: link.ResponseOnce(),
	})
	link.Start(svc)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- eventbus.NewRelay(db.Pool, bus.Pulsar(), eventbus.WithRelayPollInterval(20*time.Millisecond), eventbus.WithRelayOwner("claims-test-"+db.Name),
			eventbus.WithRelayLogger(logger)).Run(relayCtx)
	}()
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: apiSecret, Participants: []string{ispb}, Audience: rpc.DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rpc.NewMux(rpc.ServerConfig{Service: svc, Auth: auth,
		Metrics: rpc.NewMetrics(prometheus.NewRegistry()), Logger: logger}))
	t.Cleanup(func() {
		srv.Close()
		stopRelay()
		<-relayDone
		link.Stop()
	})
	tok, err := rpc.IssueToken(apiSecret, "tester", ispb, []string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeClaims}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pspStack{ispb: ispb, db: db, svc: svc, srv: srv, client: clientWith(srv, tok), reqTopic: reqTopic, resTopic: resTopic}
}

func call[Req, Res any](t *testing.T, _ *pspStack, fn func(context.Context, *Req) (*Res, error), msg *Req) (*Res, error) {
	t.Helper()
	return fn(context.Background(), msg)
}

// bearer adds a token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func clientWith(srv *httptest.Server, token string) dictv1connect.CoreDictServiceClient {
	return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearer{token, srv.Client().Transport}}, srv.URL)
}

func mustCall[Req, Res any](t *testing.T, p *pspStack, fn func(context.Context, *Req) (*Res, error), msg *Req) *Res {
	t.Helper()
	res, err := call(t, p, fn, msg)
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	return res
}

// wantRefusal checks err's code and its ErrorInfo reason.
func wantRefusal(t *testing.T, what string, err error, code connect.Code, reason string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%s: got %v, want %s %s", what, err, code, reason)
	}
	got := ""
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				got = info.GetReason()
			}
		}
	}
	if ce.Code() != code || got != reason {
		t.Fatalf("%s: got %s %s (%s), want %s %s", what, ce.Code(), got, ce.Message(), code, reason)
	}
}

// eventually polls cond until it holds; the services and the simulator
// answer through Pulsar, so a state is reached after some delivery time,
// never asserted on.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for range 1200 {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: never happened; last state: %s", what, last)
}

func (p *pspStack) claim(t *testing.T, id string) (*dictv1.Claim, error) {
	t.Helper()
	res, err := call(t, p, p.client.GetClaim, &dictv1.GetClaimRequest{Id: id})
	return res.GetClaim(), err
}

// waitClaim waits until p sees claim id in status st with nothing pending.
func (p *pspStack) waitClaim(t *testing.T, id string, st dictv1.ClaimStatus) *dictv1.Claim {
	t.Helper()
	var c *dictv1.Claim
	eventually(t, fmt.Sprintf("%s sees claim %s %s", p.ispb, id, st), func() (bool, string) {
		var err error
		c, err = p.claim(t, id)
		if err != nil {
			return false, err.Error()
		}
		return c.GetStatus() == st && c.GetPendingOperation() == "", fmt.Sprintf("%s pending %q failure %q", c.GetStatus(), c.GetPendingOperation(), c.GetFailureReason())
	})
	return c
}

func (p *pspStack) key(t *testing.T, key string) (*dictv1.Entry, error) {
	t.Helper()
	res, err := call(t, p, p.client.GetKey, &dictv1.GetKeyRequest{Key: key})
	return res.GetEntry(), err
}

func (p *pspStack) waitKey(t *testing.T, key string, st dictv1.EntryStatus) *dictv1.Entry {
	t.Helper()
	var e *dictv1.Entry
	eventually(t, fmt.Sprintf("%s sees key %s", p.ispb, st), func() (bool, string) {
		var err error
		e, err = p.key(t, key)
		if err != nil {
			return false, err.Error()
		}
		return e.GetStatus() == st, e.GetStatus().String()
	})
	return e
}

func (p *pspStack) waitNoKey(t *testing.T, key string) {
	t.Helper()
	eventually(t, p.ispb+" no longer holds the key", func() (bool, string) {
		e, err := p.key(t, key)
		if connect.CodeOf(err) == connect.CodeNotFound {
			return true, ""
		}
		return false, fmt.Sprintf("%v %v", e.GetStatus(), err)
	})
}

func account(ispb string) *dictv1.Account {
	return &dictv1.Account{Participant: ispb, Branch: "0001", Number: randDigits(8),
		Type: dictv1.AccountType_ACCOUNT_TYPE_CACC, OpenedAt: timestamppb.New(time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC))}
}

func person(cpf, name string) *dictv1.Owner {
	return &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: cpf, Name: name}
}

// newCPF returns a random valid CPF.
func newCPF() string {
	for {
		d := randDigits(9)
		sum := 0
		for i := range 9 {
			sum += int(d[i]-'0') * (10 - i)
		}
		d1 := (sum * 10) % 11 % 10
		d += string(rune('0' + d1))
		sum = 0
		for i := range 10 {
			sum += int(d[i]-'0') * (11 - i)
		}
		d2 := (sum * 10) % 11 % 10
		d += string(rune('0' + d2))
		if dict.ValidCPF(d) {
			return d
		}
	}
}

func newPhone() string { return "+55619" + randDigits(8) }

// register creates key at p through the two-phase CreateKey and waits for
// the directory to confirm it.
func (p *pspStack) register(t *testing.T, kt dictv1.KeyType, key string, owner *dictv1.Owner) *dictv1.Entry {
	t.Helper()
	mustCall(t, p, p.client.CreateKey, &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: kt, Key: key,
		Account: account(p.ispb), Owner: owner})
	return p.waitKey(t, key, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
}

// openClaim has b claim key and waits for both sides to see it OPEN.
func (w *world) openClaim(t *testing.T, ct dictv1.ClaimType, kt dictv1.KeyType, key string, claimer *dictv1.Owner) (string, *dictv1.Account) {
	t.Helper()
	reqID := uuid.NewString()
	acc := account(ispbB)
	res := mustCall(t, w.b, w.b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: reqID, Type: ct, KeyType: kt, Key: key,
		ClaimerAccount: acc, Claimer: claimer})
	if diff := cmp.Diff([]string{reqID, "CREATE"}, []string{res.GetClaim().GetId(), res.GetClaim().GetPendingOperation()}); diff != "" {
		t.Fatalf("CreateClaim answer (id, pending) mismatch (-want +got):\n%s", diff)
	}
	// A retry with the same request id answers the first answer; the same
	// request id with other data is refused.
	again := mustCall(t, w.b, w.b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: reqID, Type: ct, KeyType: kt, Key: key,
		ClaimerAccount: acc, Claimer: claimer})
	if again.GetClaim().GetId() != reqID {
		t.Fatalf("CreateClaim retry answered claim %s, want %s", again.GetClaim().GetId(), reqID)
	}
	other := account(ispbB)
	_, err := call(t, w.b, w.b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: reqID, Type: ct, KeyType: kt, Key: key,
		ClaimerAccount: other, Claimer: claimer})
	wantRefusal(t, "request id reused", err, connect.CodeAlreadyExists, dict.ReasonRequestIDAlreadyUsed)
	c := w.b.waitClaim(t, reqID, dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	if c.GetId() == reqID || c.GetDonorParticipant() != ispbA {
		t.Fatalf("claim after the directory's answer: id %s (request %s), donor %s", c.GetId(), reqID, c.GetDonorParticipant())
	}
	w.a.waitClaim(t, c.GetId(), dictv1.ClaimStatus_CLAIM_STATUS_OPEN)
	return c.GetId(), acc
}

// claimEvents lists the claim events p's outbox holds for a claim, by
// name (they share the clock's instant: the test does not move it).
func claimEvents(t *testing.T, p *pspStack, claimID string) []string {
	t.Helper()
	rows, err := p.db.Pool.Query(context.Background(),
		`SELECT event_type FROM outbox WHERE aggregate_type = 'Claim' AND aggregate_id = $1 ORDER BY event_type`, claimID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestPortabilityClaim(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.a, w.b
	cpf := newCPF()
	owner := person(cpf, "Maria da Silva")
	a.register(t, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)

	// A portability needs the same owner.
	_, err := call(t, b, b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: uuid.NewString(),
		Type: dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, KeyType: dictv1.KeyType_KEY_TYPE_CPF, Key: cpf,
		ClaimerAccount: account(ispbB), Claimer: owner})
	wantRefusal(t, "ownership of a CPF", err, connect.CodeFailedPrecondition, dict.ReasonClaimTypeInconsistent)

	id, claimerAcc := w.openClaim(t, dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)
	a.waitKey(t, cpf, dictv1.EntryStatus_ENTRY_STATUS_LOCKED_BY_CLAIM)

	// The claimer may not register the key while its claim is open.
	_, err = call(t, b, b.client.CreateKey, &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: dictv1.KeyType_KEY_TYPE_CPF,
		Key: cpf, Account: claimerAcc, Owner: owner})
	wantRefusal(t, "claimer creates the claimed key", err, connect.CodeFailedPrecondition, dict.ReasonEntryLockedByClaim)

	// A second claim on the key, and a delete of the locked key, are refused.
	_, err = call(t, b, b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: uuid.NewString(),
		Type: dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, KeyType: dictv1.KeyType_KEY_TYPE_CPF, Key: cpf,
		ClaimerAccount: account(ispbB), Claimer: owner})
	wantRefusal(t, "second claim", err, connect.CodeAlreadyExists, dict.ReasonClaimAlreadyExistsForKey)
	_, err = call(t, a, a.client.DeleteKey, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: cpf,
		Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantRefusal(t, "delete of a claimed key", err, connect.CodeFailedPrecondition, dict.ReasonEntryLockedByClaim)

	// Invalid actions, refused before anything is sent.
	for _, test := range []struct {
		name   string
		err    error
		code   connect.Code
		reason string
	}{
		{"claimer acknowledges", func() error {
			_, err := call(t, b, b.client.AcknowledgeClaim, &dictv1.AcknowledgeClaimRequest{Id: id})
			return err
		}(), connect.CodePermissionDenied, dict.ReasonClaimOperationInvalid},
		{"donor completes", func() error {
			_, err := call(t, a, a.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: uuid.NewString()})
			return err
		}(), connect.CodePermissionDenied, dict.ReasonClaimOperationInvalid},
		{"claimer completes an open claim", func() error {
			_, err := call(t, b, b.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: uuid.NewString()})
			return err
		}(), connect.CodeFailedPrecondition, dict.ReasonClaimOperationInvalid},
		{"donor confirms a portability by default", func() error {
			_, err := call(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_DEFAULT_OPERATION})
			return err
		}(), connect.CodePermissionDenied, dict.ReasonClaimOperationInvalid},
		{"donor cancels by default before day 7", func() error {
			_, err := call(t, a, a.client.CancelClaim, &dictv1.CancelClaimRequest{Id: id, Reason: dictv1.Reason_REASON_DEFAULT_OPERATION})
			return err
		}(), connect.CodeFailedPrecondition, dict.ReasonClaimResolutionPeriodNotEnded},
		{"confirm with a delete reason", func() error {
			_, err := call(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_FRAUD})
			return err
		}(), connect.CodeInvalidArgument, dict.ReasonClaimOperationInvalid},
		{"unknown claim", func() error {
			_, err := call(t, a, a.client.AcknowledgeClaim, &dictv1.AcknowledgeClaimRequest{Id: uuid.NewString()})
			return err
		}(), connect.CodeNotFound, dict.ReasonClaimNotFound},
	} {
		wantRefusal(t, test.name, test.err, test.code, test.reason)
	}

	ack := mustCall(t, a, a.client.AcknowledgeClaim, &dictv1.AcknowledgeClaimRequest{Id: id})
	if ack.GetClaim().GetPendingOperation() != "ACKNOWLEDGE" || ack.GetClaim().GetStatus() != dictv1.ClaimStatus_CLAIM_STATUS_OPEN {
		t.Fatalf("AcknowledgeClaim answer: %v pending %q, want OPEN pending ACKNOWLEDGE", ack.GetClaim().GetStatus(), ack.GetClaim().GetPendingOperation())
	}
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)

	mustCall(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	a.waitNoKey(t, cpf)

	completeID := uuid.NewString()
	mustCall(t, b, b.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: completeID})
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	e := b.waitKey(t, cpf, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	want := dict.EntryFromProto(e)
	if got := dict.CID(uuid.MustParse(completeID), want); e.GetCid() != got || e.GetRequestId() != completeID {
		t.Fatalf("claimer's entry: cid %s request %s, want cid %s request %s", e.GetCid(), e.GetRequestId(), got, completeID)
	}
	if diff := cmp.Diff([]string{"ClaimAcknowledged", "ClaimCompleted", "ClaimConfirmed", "ClaimOpened"}, claimEvents(t, a, id)); diff != "" {
		t.Errorf("donor's claim events mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ClaimAcknowledged", "ClaimCompleted", "ClaimConfirmed", "ClaimOpened"}, claimEvents(t, b, id)); diff != "" {
		t.Errorf("claimer's claim events mismatch (-want +got):\n%s", diff)
	}
	// Once done, no action is left.
	_, err = call(t, a, a.client.CancelClaim, &dictv1.CancelClaimRequest{Id: id, Reason: dictv1.Reason_REASON_FRAUD})
	wantRefusal(t, "cancel of a completed claim", err, connect.CodeFailedPrecondition, dict.ReasonClaimOperationInvalid)
}

func TestOwnershipClaimDeadlines(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.a, w.b
	ctx := context.Background()
	phone := newPhone()
	a.register(t, dictv1.KeyType_KEY_TYPE_PHONE, phone, person(newCPF(), "Jose Antigo"))
	newOwner := person(newCPF(), "Ana Nova")

	// Another owner: portability is refused by the directory.
	res := mustCall(t, b, b.client.CreateClaim, &dictv1.CreateClaimRequest{RequestId: uuid.NewString(),
		Type: dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, KeyType: dictv1.KeyType_KEY_TYPE_PHONE, Key: phone,
		ClaimerAccount: account(ispbB), Claimer: newOwner})
	eventually(t, "the directory refuses the portability", func() (bool, string) {
		c, err := b.claim(t, res.GetClaim().GetId())
		if err != nil {
			return false, err.Error()
		}
		return c.GetFailureReason() == dict.ReasonClaimTypeInconsistent && c.GetPendingOperation() == "", c.GetFailureReason()
	})

	id, _ := w.openClaim(t, dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, dictv1.KeyType_KEY_TYPE_PHONE, phone, newOwner)

	// Nothing is due yet.
	for _, p := range []*pspStack{a, b} {
		if n, err := p.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
			t.Fatalf("%s: EnforceClaimDeadlines on day 0 = %d, %v; want 0", p.ispb, n, err)
		}
	}
	_, err := call(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_DEFAULT_OPERATION})
	wantRefusal(t, "default confirm before day 7", err, connect.CodeFailedPrecondition, dict.ReasonClaimResolutionPeriodNotEnded)

	// Day 7: the donor's scheduler confirms, once.
	w.clock.Add(dict.ClaimResolutionPeriod + time.Minute)
	if n, err := a.svc.EnforceClaimDeadlines(ctx); err != nil || n != 1 {
		t.Fatalf("donor's EnforceClaimDeadlines after day 7 = %d, %v; want 1", n, err)
	}
	if n, err := a.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
		t.Fatalf("second EnforceClaimDeadlines = %d, %v; want 0 (the confirm is pending)", n, err)
	}
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	a.waitNoKey(t, phone)
	var reason string
	if err := a.db.Pool.QueryRow(ctx, `SELECT confirm_reason FROM claims WHERE id = $1`, id).Scan(&reason); err != nil || reason != "DEFAULT_OPERATION" {
		t.Fatalf("donor's confirm reason = %q, %v; want DEFAULT_OPERATION", reason, err)
	}

	// The claimer completes only after day 14.
	_, err = call(t, b, b.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: uuid.NewString()})
	wantRefusal(t, "complete before day 14", err, connect.CodeFailedPrecondition, dict.ReasonClaimCompletionPeriodNotEnded)
	w.clock.Add(dict.ClaimCompletionPeriod - dict.ClaimResolutionPeriod)
	mustCall(t, b, b.client.CompleteClaim, &dictv1.CompleteClaimRequest{Id: id, RequestId: uuid.NewString()})
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_COMPLETED)
	e := b.waitKey(t, phone, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if e.GetOwner().GetTaxId() != newOwner.GetTaxId() {
		t.Fatalf("claimer's entry owner %s, want %s", e.GetOwner().GetTaxId(), newOwner.GetTaxId())
	}
	// Past day 30 a completed claim is not due.
	w.clock.Add(20 * 24 * time.Hour)
	if n, err := b.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
		t.Fatalf("claimer's EnforceClaimDeadlines on a completed claim = %d, %v; want 0", n, err)
	}
}

func TestClaimerCancelsOwnershipAfterDay30(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.a, w.b
	ctx := context.Background()
	phone := newPhone()
	a.register(t, dictv1.KeyType_KEY_TYPE_PHONE, phone, person(newCPF(), "Jose Antigo"))
	id, _ := w.openClaim(t, dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, dictv1.KeyType_KEY_TYPE_PHONE, phone, person(newCPF(), "Ana Nova"))
	mustCall(t, a, a.client.ConfirmClaim, &dictv1.ConfirmClaimRequest{Id: id, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CONFIRMED)
	a.waitNoKey(t, phone)

	w.clock.Add(dict.ClaimCompletionPeriod + time.Hour)
	_, err := call(t, b, b.client.CancelClaim, &dictv1.CancelClaimRequest{Id: id, Reason: dictv1.Reason_REASON_DEFAULT_OPERATION})
	wantRefusal(t, "claimer's default cancel before day 30", err, connect.CodeFailedPrecondition, dict.ReasonClaimOperationInvalid)
	if n, err := b.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
		t.Fatalf("claimer's EnforceClaimDeadlines on day 14 = %d, %v; want 0", n, err)
	}
	w.clock.Add(dict.ClaimOwnershipValidationPeriod - dict.ClaimCompletionPeriod)
	if n, err := b.svc.EnforceClaimDeadlines(ctx); err != nil || n != 1 {
		t.Fatalf("claimer's EnforceClaimDeadlines on day 30 = %d, %v; want 1", n, err)
	}
	c := b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
	if c.GetCancelReason() != dictv1.Reason_REASON_DEFAULT_OPERATION {
		t.Fatalf("cancel reason %s, want DEFAULT_OPERATION", c.GetCancelReason())
	}
	a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
	// Cancelled after the confirm: the key is the donor's again, as it was.
	a.waitKey(t, phone, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
}

func TestUnansweredPortabilityCancelledAndListClaims(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.a, w.b
	ctx := context.Background()
	var ids []string
	var keys []string
	for range 3 {
		cpf := newCPF()
		owner := person(cpf, "Carlos Souza")
		a.register(t, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)
		id, _ := w.openClaim(t, dictv1.ClaimType_CLAIM_TYPE_PORTABILITY, dictv1.KeyType_KEY_TYPE_CPF, cpf, owner)
		ids, keys = append(ids, id), append(keys, cpf)
		w.clock.Add(time.Hour)
	}
	// The first one A acknowledges; the others stay unanswered.
	mustCall(t, a, a.client.AcknowledgeClaim, &dictv1.AcknowledgeClaimRequest{Id: ids[0]})
	a.waitClaim(t, ids[0], dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION)

	list := func(p *pspStack, req *dictv1.ListClaimsRequest) []string {
		t.Helper()
		var out []string
		for {
			res := mustCall(t, p, p.client.ListClaims, req)
			for _, c := range res.GetClaims() {
				out = append(out, c.GetId())
			}
			if res.GetNextPageToken() == "" {
				return out
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
	newestFirst := []string{ids[2], ids[1], ids[0]}
	for _, test := range []struct {
		name string
		p    *pspStack
		req  *dictv1.ListClaimsRequest
		want []string
	}{
		{"donor, all, paged by one", a, &dictv1.ListClaimsRequest{AsDonor: true, PageSize: 1}, newestFirst},
		{"donor's side only of the donor", a, &dictv1.ListClaimsRequest{AsClaimer: true}, nil},
		{"claimer, both sides", b, &dictv1.ListClaimsRequest{PageSize: 2}, newestFirst},
		{"claimer as donor", b, &dictv1.ListClaimsRequest{AsDonor: true}, nil},
		{"donor, waiting", a, &dictv1.ListClaimsRequest{AsDonor: true, Statuses: []dictv1.ClaimStatus{dictv1.ClaimStatus_CLAIM_STATUS_WAITING_RESOLUTION}}, ids[:1]},
		{"claimer, open", b, &dictv1.ListClaimsRequest{AsClaimer: true, Statuses: []dictv1.ClaimStatus{dictv1.ClaimStatus_CLAIM_STATUS_OPEN}}, []string{ids[2], ids[1]}},
	} {
		if diff := cmp.Diff(test.want, list(test.p, test.req)); diff != "" {
			t.Errorf("ListClaims %s mismatch (-want +got):\n%s", test.name, diff)
		}
	}
	// B's claims are not A's to see as claimer, nor anyone else's.
	if _, err := call(t, a, a.client.GetClaim, &dictv1.GetClaimRequest{Id: uuid.NewString()}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetClaim of an unknown id: %v, want NotFound", err)
	}

	// Day 7 of the first claim: all three are due at the donor, who cancels
	// them with DEFAULT_OPERATION; the claimer's scheduler has nothing to do.
	w.clock.Add(dict.ClaimResolutionPeriod)
	if n, err := b.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
		t.Fatalf("claimer's EnforceClaimDeadlines = %d, %v; want 0", n, err)
	}
	// Two instances of A run the scheduler at once: each claim is taken by
	// one of them.
	second := dict.NewService(dict.ServiceConfig{Pool: a.db.App, Participants: []string{a.ispb}, Now: w.clock.Now, Logger: testLogger(),
		DirectoryRequestTopic: a.reqTopic, DirectoryReplyTo: a.resTopic})
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, svc := range []*dict.Service{a.svc, second} {
		wg.Go(func() {
			n, err := svc.EnforceClaimDeadlines(ctx)
			if err != nil {
				t.Errorf("instance %d: EnforceClaimDeadlines: %v", i, err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if counts[0]+counts[1] != 3 {
		t.Fatalf("donor's instances sent %v actions, want 3 in all", counts)
	}
	if n, err := a.svc.EnforceClaimDeadlines(ctx); err != nil || n != 0 {
		t.Fatalf("EnforceClaimDeadlines with the cancels pending = %d, %v; want 0", n, err)
	}
	for i, id := range ids {
		c := b.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
		if c.GetCancelReason() != dictv1.Reason_REASON_DEFAULT_OPERATION {
			t.Errorf("claim %d cancel reason %s, want DEFAULT_OPERATION", i, c.GetCancelReason())
		}
		a.waitClaim(t, id, dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED)
		a.waitKey(t, keys[i], dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	}
	if diff := cmp.Diff(newestFirst, list(a, &dictv1.ListClaimsRequest{Statuses: []dictv1.ClaimStatus{dictv1.ClaimStatus_CLAIM_STATUS_CANCELLED}})); diff != "" {
		t.Errorf("ListClaims cancelled mismatch (-want +got):\n%s", diff)
	}
	// The key can be deleted again once the claim is over.
	mustCall(t, a, a.client.DeleteKey, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: keys[0], Reason: dictv1.Reason_REASON_USER_REQUESTED})
}

func TestClaimScopes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tok, err := rpc.IssueToken(apiSecret, "tester", ispbA, []string{rpc.ScopeRead, rpc.ScopeWrite}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = clientWith(w.a.srv, tok).ListClaims(context.Background(), &dictv1.ListClaimsRequest{})
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("ListClaims without dict.claims: %v, want PermissionDenied", err)
	}
}
