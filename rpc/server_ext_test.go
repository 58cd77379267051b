package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/dictcache"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// The participants of these tests: A and B are served by the instance, C is
// not.
const (
	partA = "12345678"
	partB = "87654321"
	partC = "11223344"
)

// testDirectoryTimeout is how long the tests' reads wait for the directory.
const testDirectoryTimeout = 30 * time.Second

var apiSecret = []byte("core-dict-test-secret-0123456789abcdef")

// env is the one server and database of this package's tests.
var env struct {
	db     *testdb.DB
	stack  *stack
	server *httptest.Server
}

func TestMain(m *testing.M) {
	ctx := context.Background()
	db, err := testdb.Create(ctx, "rpc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpc tests:", err)
		os.Exit(1)
	}
	env.db = db
	env.stack, err = newStack(db, redisTestURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpc tests:", err)
		os.Exit(1)
	}
	if !env.stack.redis.Available() {
		fmt.Fprintln(os.Stderr, "rpc tests: Redis does not answer at", redisTestURL(), "- start it with `scripts/deps.sh up`")
		os.Exit(1)
	}
	env.server = env.stack.server
	code := m.Run()
	env.stack.close()
	closeDirectories()
	db.Close()
	os.Exit(code)
}

// stack is one core-dict instance of the tests: the real server over the
// package's database, with Redis (the cache, the anti-scanning buckets, the
// write-behind lookup counters) at redisURL, or none when redisURL is "".
type stack struct {
	link     *dictbus.Link
	stopBus  func()
	server   *httptest.Server
	svc      *dict.Service
	redis    *cachelayer.Client
	counter  *cachelayer.WriteBehindCounter
	registry *prometheus.Registry
}

func (s *stack) close() {
	s.server.Close()
	s.stopBus()
	if s.counter != nil {
		_ = s.counter.Close(context.Background())
	}
	if s.redis != nil {
		s.redis.Close()
	}
}

func newStack(db *testdb.DB, redisURL string) (*stack, error) {
	return newStackWith(db, redisURL, nil)
}

// newStackWith is newStack with a directory for the keys this PSP does not
// hold.
func newStackWith(db *testdb.DB, redisURL string, dir dict.Directory, interceptors ...connect.Interceptor) (*stack, error) {
	return newStackTopic(db, redisURL, dir, "", interceptors...)
}

// newStackTopic is newStackWith writing key events for topic.
func newStackTopic(db *testdb.DB, redisURL string, dir dict.Directory, topic string, interceptors ...connect.Interceptor) (*stack, error) {
	return newStackTraced(db, redisURL, dir, topic, nil, interceptors...)
}

// newStackTraced is newStackTopic starting its server spans with tp (nil:
// otel's global provider).
func newStackTraced(db *testdb.DB, redisURL string, dir dict.Directory, topic string, tp trace.TracerProvider, interceptors ...connect.Interceptor) (*stack, error) {
	return newStackOpts(db, redisURL, stackOptions{dir: dir, topic: topic, tp: tp, interceptors: interceptors})
}

// stackOptions configure a test stack.
type stackOptions struct {
	// dir replaces the Pulsar request/reply directory for lookups.
	dir dict.Directory
	// topic is the key events topic (default: one of db's own).
	topic string
	tp    trace.TracerProvider
	// directoryTimeout bounds a lookup's wait (default dictbus's).
	directoryTimeout time.Duration
	// resendAfter is the link's re-send age of unanswered writes (default
	// 3 s, so that TestLostRequestIsSentAgain need not wait long).
	resendAfter  time.Duration
	interceptors []connect.Interceptor
	// ipLimiter and accountLimiter are the edge limiters (none by default).
	ipLimiter, accountLimiter rpc.KeyLimiter
	// logger, when set, replaces the discarding logger of the service and
	// the server (the hostile-input suite reads what they log).
	logger *slog.Logger
	// auth, when set, replaces the HS256 apiSecret authenticator.
	auth *rpc.Authenticator
}

// newStackOpts builds a stack as the production wiring does: the service
// over db, an outbox relay, and the directory link (the responses consumer
// and the request/reply requester) to db's test directory over Pulsar.
func newStackOpts(db *testdb.DB, redisURL string, o stackOptions) (*stack, error) {
	dir, topic, tp, interceptors := o.dir, o.topic, o.tp, o.interceptors
	if topic == "" {
		topic = "persistent://dict/events/rpc-keys-" + db.Name
	}
	bus, err := testBus()
	if err != nil {
		return nil, err
	}
	if _, err := directoryOf(db); err != nil {
		return nil, err
	}
	resendAfter := o.resendAfter
	if resendAfter == 0 {
		resendAfter = 3 * time.Second
	}
	// A test's reads wait longer than production's 5 s: on a loaded 2-core
	// machine (make test runs packages side by side with Chromium and
	// Pulsar) a reply can take seconds, and these tests are about what the
	// answer is, not how fast it comes. The deadline itself is tested with
	// 500 ms (TestLookupThroughDirectory).
	directoryTimeout := o.directoryTimeout
	if directoryTimeout == 0 {
		directoryTimeout = testDirectoryTimeout
	}
	link, err := dictbus.New(bus, db.App, dictbus.Config{
		RequestTopic: reqTopic(db), ResponseTopic: resTopic(db),
		ReplyTopic:   dictbus.ReplyTopic(resTopic(db), uuid.NewString()[:8]),
		Subscription: "core-dict-test", Timeout: directoryTimeout, ResendAfter: resendAfter,
	})
	if err != nil {
		return nil, err
	}
	if dir == nil {
		dir = link.Directory()
	}
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{
		HS256Secret:  apiSecret,
		Participants: []string{partA, partB},
		Audience:     rpc.DefaultAudience,
	})
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if o.logger != nil {
		logger = o.logger
	}
	if o.auth != nil {
		auth = o.auth
	}
	st := &stack{registry: prometheus.NewRegistry()}
	cfg := dict.ServiceConfig{
		Pool:             db.App,
		Participants:     []string{partA, partB},
		Logger:           logger,
		ParticipantNames: map[string]string{partA: "Banco A"},
		Directory:        dir,
		KeyEventsTopic:   topic,
		TraceParent:      rpc.TraceParent,

		DirectoryRequestTopic: reqTopic(db),
		DirectoryReplyTo:      resTopic(db),
		ResponseOnce:          link.ResponseOnce(),
	}
	if redisURL != "" {
		rc := cachelayer.DefaultConfig()
		rc.URL = redisURL
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st.redis, err = cachelayer.NewClient(ctx, rc, cachelayer.WithRegisterer(st.registry), cachelayer.WithLogger(logger))
		cancel()
		if err != nil {
			return nil, err
		}
		tb, err := cachelayer.NewTokenBucket(st.redis, cachelayer.WithLimitRegisterer(st.registry), cachelayer.WithLimitLogger(logger))
		if err != nil {
			return nil, err
		}
		antiScan, _ := dict.NewAntiScan(dictcache.Buckets{TB: tb}, "A")
		var svc *dict.Service
		st.counter = cachelayer.NewWriteBehindCounter(st.redis, "lookups-"+db.Name,
			func(ctx context.Context, batch string, counts map[string]int64) error {
				return svc.ApplyLookupCounts(ctx, batch, counts)
			})
		cfg.Cache = dictcache.NewEntryCache(st.redis, time.Minute)
		cfg.AntiScan = antiScan
		cfg.LookupCounter = st.counter
		cfg.Lookups = cachelayer.NewOneShot(st.redis, "dict:lookup:"+db.Name+":", time.Hour)
		cfg.DirectoryCache = cachelayer.NewCacheAside[dict.Entry](st.redis, "dict:directory:"+db.Name+":")
		svc = dict.NewService(cfg)
		st.svc = svc
	} else {
		st.svc = dict.NewService(cfg)
	}
	link.Start(st.svc)
	st.link = link
	// A test that names its key events topic runs its own relay (with its
	// own broker, tracer or metrics); the stack relays only for the others.
	stopRelay, relayDone := func() {}, make(chan error, 1)
	if o.topic == "" {
		var relayCtx context.Context
		relayCtx, stopRelay = context.WithCancel(context.Background())
		go func() { relayDone <- eventbus.NewRelay(db.Pool, bus.Pulsar()).Run(relayCtx) }()
	} else {
		relayDone <- nil
	}
	st.stopBus = func() {
		stopRelay()
		<-relayDone
		link.Stop()
	}
	mux := rpc.NewMux(rpc.ServerConfig{
		Service: st.svc,
		Auth:    auth,
		Metrics: rpc.NewMetrics(st.registry),
		Logger:  logger,

		Interceptors:   interceptors,
		IPLimiter:      o.ipLimiter,
		AccountLimiter: o.accountLimiter,
		TracerProvider: tp,
	})
	s := httptest.NewUnstartedServer(mux)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	st.server = s
	return st, nil
}

// redisTestURL is the shared local Redis of scripts/deps.sh.
func redisTestURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func token(tb testing.TB, ispb string, scopes ...string) string {
	tb.Helper()
	if len(scopes) == 0 {
		scopes = []string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeLookup, rpc.ScopeClaims}
	}
	tok, err := rpc.IssueToken(apiSecret, "tester", ispb, scopes, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

var h2cTransport = func() *http.Transport {
	// Only unencrypted HTTP/2 set: the transport then speaks h2c with prior
	// knowledge to http:// URLs.
	t := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}()

var http1Transport = &http.Transport{MaxIdleConnsPerHost: 64}

// clientHTTP is an HTTP/1.1 client that signs requests as ispb.
func clientHTTP(tb testing.TB, ispb string) *http.Client {
	return &http.Client{Transport: bearerOver{tok: token(tb, ispb), rt: http1Transport}, Timeout: 30 * time.Second}
}

// client returns a CoreDictService client acting for ispb, speaking
// Connect JSON unless opts say otherwise.
func client(tb testing.TB, ispb string, opts ...connect.ClientOption) dictv1connect.CoreDictServiceClient {
	hc := clientHTTP(tb, ispb)
	return dictv1connect.NewCoreDictServiceClient(hc, env.server.URL, append([]connect.ClientOption{connect.WithProtoJSON()}, opts...)...)
}

// grpcClient speaks gRPC over h2c.
func grpcClient(tb testing.TB, ispb string) dictv1connect.CoreDictServiceClient {
	hc := &http.Client{Transport: bearerOver{tok: token(tb, ispb), rt: h2cTransport}, Timeout: 30 * time.Second}
	return dictv1connect.NewCoreDictServiceClient(hc, env.server.URL, connect.WithGRPC())
}

type bearerOver struct {
	tok string
	rt  http.RoundTripper
}

func (b bearerOver) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

// --- generators of valid tax ids -------------------------------------------

var seq atomic.Int64

func init() { seq.Store(time.Now().UnixNano() % 1e6 * 100) }

// newCPF returns a fresh valid CPF.
func newCPF() string {
	n := 100000000 + seq.Add(1)%800000000
	base := fmt.Sprintf("%09d", n)
	d := base
	for _, weight := range []int{10, 11} {
		sum := 0
		for i := range d {
			sum += int(d[i]-'0') * (weight - i)
		}
		r := sum * 10 % 11
		if r == 10 {
			r = 0
		}
		d += string(rune('0' + r))
	}
	return d
}

// newCNPJ returns a fresh valid CNPJ; alnum makes its root alphanumeric.
func newCNPJ(alnum bool) string {
	n := seq.Add(1) % 1e8
	base := fmt.Sprintf("%08d0001", n)
	if alnum {
		base = "AB" + base[2:]
	}
	d := base
	for _, w := range [][]int{{5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}, {6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}} {
		sum := 0
		for i := range w {
			sum += int(d[i]-'0') * w[i]
		}
		r := sum % 11
		dv := 0
		if r >= 2 {
			dv = 11 - r
		}
		d += string(rune('0' + dv))
	}
	return d
}

func newPhone() string { return fmt.Sprintf("+55619%08d", seq.Add(1)%1e8) }
func newEmail() string { return fmt.Sprintf("user%d@example.com.br", seq.Add(1)) }
func newAccountNumber() string {
	return fmt.Sprintf("%010d", seq.Add(1))
}

func naturalOwner(cpf string) *dictv1.Owner {
	return &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: cpf, Name: "Maria da Silva"}
}

func legalOwner(cnpj string) *dictv1.Owner {
	return &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_LEGAL_PERSON, TaxId: cnpj, Name: "Empresa Exemplo Ltda", TradeName: "Exemplo"}
}

func account(ispb string) *dictv1.Account {
	return &dictv1.Account{
		Participant: ispb, Branch: "0001", Number: newAccountNumber(),
		Type:     dictv1.AccountType_ACCOUNT_TYPE_CACC,
		OpenedAt: timestamppb.New(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
}

func createReq(kt dictv1.KeyType, key string, acc *dictv1.Account, owner *dictv1.Owner) *dictv1.CreateKeyRequest {
	return &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: kt, Key: key, Account: acc, Owner: owner}
}

// mustCreate creates a key or fails the test.
func mustCreate(t testing.TB, c dictv1connect.CoreDictServiceClient, req *dictv1.CreateKeyRequest) *dictv1.Entry {
	t.Helper()
	res, err := c.CreateKey(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", req.GetKeyType(), err)
	}
	if res.GetEntry().GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING {
		t.Fatalf("CreateKey(%s) answered %s, want PENDING", req.GetKeyType(), res.GetEntry().GetStatus())
	}
	// An EVP is found by its request id until (and after) the directory
	// generates its key.
	return awaitEntry(t, c, res.GetEntry().GetKey(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
}

// wantErr checks a Connect error's code and, when reason is set, its
// ErrorInfo reason.
func wantErr(t *testing.T, err error, code connect.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %s", code, reason)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code = %v, want %v (err: %v)", got, code, err)
	}
	if reason == "" {
		return
	}
	if got := errorReason(err); got != reason {
		t.Fatalf("reason = %q, want %q (err: %v)", got, reason, err)
	}
}

func errorReason(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func badFields(err error) []string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	var out []string
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, f := range br.GetFieldViolations() {
				out = append(out, f.GetField())
			}
		}
	}
	return out
}

// countRows counts the rows of table (a fixed name from the tests) matching
// where, with args.
func countRows(t *testing.T, table, where string, args ...any) int {
	t.Helper()
	var n int
	if err := env.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// --- tests -----------------------------------------------------------------

func TestCreateKeyEachType(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	cpf, cnpj, cnpjAlnum := newCPF(), newCNPJ(false), newCNPJ(true)
	phone, email := newPhone(), newEmail()
	for _, test := range []struct {
		name    string
		req     *dictv1.CreateKeyRequest
		wantKey string // "" for EVP: checked by form
	}{
		{"CPF formatted", createReq(dictv1.KeyType_KEY_TYPE_CPF, cpf[:3]+"."+cpf[3:6]+"."+cpf[6:9]+"-"+cpf[9:], account(partA), naturalOwner(cpf)), cpf},
		{"CNPJ formatted", createReq(dictv1.KeyType_KEY_TYPE_CNPJ, cnpj[:2]+"."+cnpj[2:5]+"."+cnpj[5:8]+"/"+cnpj[8:12]+"-"+cnpj[12:], account(partA), legalOwner(cnpj)), cnpj},
		{"CNPJ alphanumeric lower-case", createReq(dictv1.KeyType_KEY_TYPE_CNPJ, strings.ToLower(cnpjAlnum), account(partA), legalOwner(cnpjAlnum)), cnpjAlnum},
		{"PHONE formatted", createReq(dictv1.KeyType_KEY_TYPE_PHONE, "+55 (61) "+phone[5:10]+"-"+phone[10:], account(partA), naturalOwner(newCPF())), phone},
		{"EMAIL upper-case", createReq(dictv1.KeyType_KEY_TYPE_EMAIL, strings.ToUpper(email), account(partA), naturalOwner(newCPF())), email},
		{"EVP generated", createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())), ""},
	} {
		t.Run(test.name, func(t *testing.T) {
			e := mustCreate(t, c, test.req)
			if test.wantKey != "" && e.GetKey() != test.wantKey {
				t.Errorf("key = %q, want canonical %q", e.GetKey(), test.wantKey)
			}
			if test.wantKey == "" {
				if _, err := uuid.Parse(e.GetKey()); err != nil || e.GetKey() != strings.ToLower(e.GetKey()) {
					t.Errorf("EVP key %q is not a lowercase UUID", e.GetKey())
				}
			}
			if e.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
				t.Errorf("status = %v, want ACTIVE", e.GetStatus())
			}
			// The CID is the HMAC of DOMAIN.md, keyed by the request id.
			want := dict.CID(uuid.MustParse(test.req.GetRequestId()), dict.Entry{
				KeyType: dict.KeyType(e.GetKeyType()), Key: e.GetKey(),
				Owner: dict.Owner{TaxID: e.GetOwner().GetTaxId(), Name: e.GetOwner().GetName(), TradeName: e.GetOwner().GetTradeName()},
				Account: dict.Account{Participant: e.GetAccount().GetParticipant(), Branch: e.GetAccount().GetBranch(),
					Number: e.GetAccount().GetNumber(), Type: dict.AccountType(e.GetAccount().GetType())},
			})
			if e.GetCid() != want {
				t.Errorf("cid = %s, want %s", e.GetCid(), want)
			}
			got, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e.String(), got.GetEntry().String()); diff != "" {
				t.Errorf("GetKey mismatch (-want +got):\n%s", diff)
			}
			// The request is audited under the key it was made for (an EVP's
			// request id), the confirmation under the directory's key.
			if n := countRows(t, "audit_log", "request_id = $1 AND action = 'CreateKey'", test.req.GetRequestId()); n != 1 {
				t.Errorf("audit rows = %d, want 1", n)
			}
			if n := countRows(t, "audit_log", "key = $1 AND action = 'CreateKeyConfirmed'", e.GetKey()); n != 1 {
				t.Errorf("confirmation audit rows = %d, want 1", n)
			}
			if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'KeyCreated'", e.GetKey()); n != 1 {
				t.Errorf("outbox rows = %d, want 1", n)
			}
		})
	}
}

func TestCreateKeyInvalid(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	cpf := newCPF()
	badCPF := cpf[:9] + string(rune('0'+(int(cpf[9]-'0')+1)%10)) + cpf[10:]
	for _, test := range []struct {
		name      string
		req       *dictv1.CreateKeyRequest
		wantField string
		reason    string
	}{
		{"CPF bad check digit", createReq(dictv1.KeyType_KEY_TYPE_CPF, badCPF, account(partA), naturalOwner(badCPF)), "key", dict.ReasonEntryInvalid},
		{"CPF all same digits", createReq(dictv1.KeyType_KEY_TYPE_CPF, "11111111111", account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"CPF of another owner", createReq(dictv1.KeyType_KEY_TYPE_CPF, cpf, account(partA), naturalOwner(newCPF())), "key", dict.ReasonEntryTaxIDNumberByDifferentOwner},
		{"CNPJ of another owner", createReq(dictv1.KeyType_KEY_TYPE_CNPJ, newCNPJ(false), account(partA), legalOwner(newCNPJ(false))), "key", dict.ReasonEntryTaxIDNumberByDifferentOwner},
		{"CPF for a legal person", createReq(dictv1.KeyType_KEY_TYPE_CPF, cpf, account(partA), legalOwner(newCNPJ(false))), "owner.type", dict.ReasonEntryInvalid},
		{"CNPJ bad check digits", createReq(dictv1.KeyType_KEY_TYPE_CNPJ, "11222333000182", account(partA), legalOwner("11222333000182")), "key", dict.ReasonEntryInvalid},
		{"PHONE without plus", createReq(dictv1.KeyType_KEY_TYPE_PHONE, "5561988880000", account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"PHONE too long", createReq(dictv1.KeyType_KEY_TYPE_PHONE, "+5561988880000123", account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"EMAIL with percent", createReq(dictv1.KeyType_KEY_TYPE_EMAIL, "a%b@example.com", account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"EMAIL 78 characters", createReq(dictv1.KeyType_KEY_TYPE_EMAIL, strings.Repeat("a", 66)+"@example.com", account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"EVP sent by caller", createReq(dictv1.KeyType_KEY_TYPE_EVP, uuid.NewString(), account(partA), naturalOwner(cpf)), "key", dict.ReasonEntryInvalid},
		{"no key type", createReq(dictv1.KeyType_KEY_TYPE_UNSPECIFIED, "x", account(partA), naturalOwner(cpf)), "key_type", dict.ReasonEntryInvalid},
		{"unknown key type number", createReq(dictv1.KeyType(42), "x", account(partA), naturalOwner(cpf)), "key_type", dict.ReasonEntryInvalid},
		{"bad request id", &dictv1.CreateKeyRequest{RequestId: "not-a-uuid", KeyType: dictv1.KeyType_KEY_TYPE_EVP, Account: account(partA), Owner: naturalOwner(cpf)}, "request_id", dict.ReasonEntryInvalid},
		{"bad account number", createReq(dictv1.KeyType_KEY_TYPE_EVP, "", &dictv1.Account{Participant: partA, Number: "12-3", Type: dictv1.AccountType_ACCOUNT_TYPE_CACC, OpenedAt: timestamppb.Now()}, naturalOwner(cpf)), "account.number", dict.ReasonEntryInvalid},
		{"name too long", createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: cpf, Name: strings.Repeat("n", 151)}), "owner.name", dict.ReasonEntryInvalid},
	} {
		t.Run(test.name, func(t *testing.T) {
			_, err := c.CreateKey(context.Background(), test.req)
			wantErr(t, err, connect.CodeInvalidArgument, test.reason)
			if fields := badFields(err); !contains(fields, test.wantField) {
				t.Errorf("BadRequest fields = %v, want %q among them", fields, test.wantField)
			}
			if n := countRows(t, "requests", "request_id::text = $1", test.req.GetRequestId()); n != 0 {
				t.Errorf("an invalid request left %d request rows", n)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestCreateKeyReportsEveryBadField(t *testing.T) {
	t.Parallel()
	_, err := client(t, partA).CreateKey(context.Background(), &dictv1.CreateKeyRequest{
		RequestId: uuid.NewString(), KeyType: dictv1.KeyType_KEY_TYPE_EMAIL, Key: "no-at-sign",
		Account: &dictv1.Account{Participant: partA, Number: "", Type: dictv1.AccountType_ACCOUNT_TYPE_UNSPECIFIED},
		Owner:   &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: "123", Name: ""},
	})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
	want := []string{"key", "account.number", "account.type", "account.opened_at", "owner.tax_id", "owner.name"}
	if diff := cmp.Diff(want, badFields(err)); diff != "" {
		t.Errorf("BadRequest fields mismatch (-want +got):\n%s", diff)
	}
}

func TestKeysPerAccountLimit(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	for _, test := range []struct {
		name  string
		owner func() *dictv1.Owner
		limit int
	}{
		{"natural person: 5", func() *dictv1.Owner { return naturalOwner(newCPF()) }, 5},
		{"legal person: 20", func() *dictv1.Owner { return legalOwner(newCNPJ(false)) }, 20},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			acc, owner := account(partA), test.owner()
			for i := 0; i < test.limit; i++ {
				mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", acc, owner))
			}
			_, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), acc, owner))
			wantErr(t, err, connect.CodeFailedPrecondition, dict.ReasonEntryLimitExceeded)
			if n := countRows(t, "entries", "account_number = $1", acc.GetNumber()); n != test.limit {
				t.Errorf("entries on account = %d, want %d", n, test.limit)
			}
			// Another account of the same owner is not affected.
			mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), owner))
		})
	}
}

func TestKeysPerAccountLimitConcurrent(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	acc, owner := account(partA), naturalOwner(newCPF())
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EVP, "", acc, owner))
			if err == nil {
				ok.Add(1)
			} else if errorReason(err) != dict.ReasonEntryLimitExceeded {
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 5 {
		t.Errorf("%d concurrent creates succeeded on one natural person's account, want 5", ok.Load())
	}
}

func TestConcurrentCreatesOfOneKey(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name        string
		sameAccount bool
	}{
		{"same account", true},
		{"different accounts", false},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			c := client(t, partA)
			key, acc, owner := newPhone(), account(partA), naturalOwner(newCPF())
			var wg sync.WaitGroup
			var won atomic.Int32
			errs := make(chan error, 50)
			for i := 0; i < 50; i++ {
				a := acc
				if !test.sameAccount {
					a = account(partA)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_PHONE, key, a, owner))
					if err == nil {
						won.Add(1)
						return
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			if won.Load() != 1 {
				t.Errorf("%d creates won, want exactly 1", won.Load())
			}
			for err := range errs {
				wantErr(t, err, connect.CodeAlreadyExists, dict.ReasonEntryAlreadyExists)
			}
			if n := countRows(t, "entries", "key = $1", key); n != 1 {
				t.Errorf("entries for key = %d, want 1", n)
			}
			if n := countRows(t, "outbox", "aggregate_id = $1 AND event_type = 'DirectoryRequest'", key); n != 1 {
				t.Errorf("directory requests for key = %d, want 1", n)
			}
		})
	}
}

func TestCreateKeyHeldElsewhere(t *testing.T) {
	t.Parallel()
	phone, owner := newPhone(), naturalOwner(newCPF())
	mustCreate(t, client(t, partB), createReq(dictv1.KeyType_KEY_TYPE_PHONE, phone, account(partB), owner))
	for _, test := range []struct {
		name   string
		client dictv1connect.CoreDictServiceClient
		acc    *dictv1.Account
		owner  *dictv1.Owner
		reason string
	}{
		{"same owner at another participant", client(t, partA), account(partA), owner, dict.ReasonEntryKeyInCustodyOfDifferentParticipant},
		{"another owner", client(t, partA), account(partA), naturalOwner(newCPF()), dict.ReasonEntryKeyOwnedByDifferentPerson},
		{"same owner, same participant", client(t, partB), account(partB), owner, dict.ReasonEntryAlreadyExists},
	} {
		t.Run(test.name, func(t *testing.T) {
			_, err := test.client.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_PHONE, phone, test.acc, test.owner))
			wantErr(t, err, connect.CodeAlreadyExists, test.reason)
		})
	}
}

func TestRequestIDIdempotency(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	req := createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))
	first := mustCreate(t, c, req)
	again := mustCreate(t, c, req)
	if diff := cmp.Diff(first.String(), again.String()); diff != "" {
		t.Errorf("retry answered differently (-first +retry):\n%s", diff)
	}
	if n := countRows(t, "entries", "request_id = $1", uuid.MustParse(req.GetRequestId())); n != 1 {
		t.Errorf("entries for request = %d, want 1", n)
	}
	// Retried concurrently: still one entry, one answer.
	req2 := createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF()))
	var wg sync.WaitGroup
	keys := make([]string, 10)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.CreateKey(context.Background(), req2)
			if err != nil {
				t.Errorf("concurrent retry %d: %v", i, err)
				return
			}
			keys[i] = res.GetEntry().GetCid()
		}()
	}
	wg.Wait()
	for i := range keys {
		if keys[i] != keys[0] {
			t.Errorf("retry %d answered cid %s, first %s", i, keys[i], keys[0])
		}
	}

	// The same id with other data is refused, and nothing changes.
	other := createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF()))
	other.RequestId = req.GetRequestId()
	_, err := c.CreateKey(context.Background(), other)
	wantErr(t, err, connect.CodeAlreadyExists, dict.ReasonRequestIDAlreadyUsed)
	if n := countRows(t, "entries", "key = $1", other.GetKey()); n != 0 {
		t.Errorf("RequestIdAlreadyUsed wrote %d entries", n)
	}
	// Reusing the id for another operation is refused too.
	_, err = c.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: req.GetRequestId(), Key: first.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeAlreadyExists, dict.ReasonRequestIDAlreadyUsed)
	// And by another participant.
	_, err = client(t, partB).CreateKey(context.Background(), func() *dictv1.CreateKeyRequest {
		r := createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partB), req.GetOwner())
		r.RequestId = req.GetRequestId()
		return r
	}())
	wantErr(t, err, connect.CodeAlreadyExists, dict.ReasonRequestIDAlreadyUsed)
}

func TestParticipantIsolation(t *testing.T) {
	t.Parallel()
	a, b := client(t, partA), client(t, partB)
	e := mustCreate(t, a, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF())))

	_, err := b.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	_, err = b.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(),
		Account: account(partB), Owner: &dictv1.Owner{Name: "Hijack"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	_, err = b.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	list, err := b.ListKeys(context.Background(), &dictv1.ListKeysRequest{OwnerTaxId: e.GetOwner().GetTaxId()})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetEntries()) != 0 {
		t.Errorf("participant B listed %d of A's entries", len(list.GetEntries()))
	}
	// Creating on an account of another participant is refused.
	_, err = b.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
	wantErr(t, err, connect.CodePermissionDenied, "")
	// A token for a participant this instance does not serve is refused.
	_, err = client(t, partC).GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	wantErr(t, err, connect.CodePermissionDenied, "")
	// A token without the write scope cannot write.
	ro := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok: token(t, partA, rpc.ScopeRead), rt: http1Transport}}, env.server.URL, connect.WithProtoJSON())
	_, err = ro.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodePermissionDenied, "")
	// No token at all.
	anon := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: http1Transport}, env.server.URL)
	_, err = anon.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	wantErr(t, err, connect.CodeUnauthenticated, "")

	if got, err := a.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()}); err != nil || got.GetEntry().GetOwner().GetName() != "Maria da Silva" {
		t.Errorf("A's entry changed or vanished: %v %v", got, err)
	}
}

func TestUpdateAndDeleteKey(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	cnpj := newCNPJ(true)
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_CNPJ, cnpj, account(partA), legalOwner(cnpj)))

	newAcc := account(partA)
	upd := &dictv1.UpdateKeyRequest{
		RequestId: uuid.NewString(), Key: e.GetKey(), Account: newAcc,
		Owner:  &dictv1.Owner{Name: "Empresa Renomeada SA", TradeName: "Renomeada"},
		Reason: dictv1.Reason_REASON_BRANCH_TRANSFER,
	}
	res, err := c.UpdateKey(context.Background(), upd)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.GetEntry(); p.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING || p.GetCid() != e.GetCid() {
		t.Errorf("update answered %s with cid %s, want PENDING with the current data", p.GetStatus(), p.GetCid())
	}
	u := awaitEntry(t, c, e.GetKey(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	if u.GetAccount().GetNumber() != newAcc.GetNumber() || u.GetOwner().GetName() != "Empresa Renomeada SA" || u.GetOwner().GetTaxId() != cnpj {
		t.Errorf("update not applied: %v", u)
	}
	if u.GetCid() == e.GetCid() {
		t.Error("cid did not change on update")
	}
	if !u.GetCreatedAt().AsTime().Equal(e.GetCreatedAt().AsTime()) || u.GetRequestId() != e.GetRequestId() {
		t.Error("update changed the creation data")
	}
	// Retrying the update answers the same (its first answer).
	again, err := c.UpdateKey(context.Background(), upd)
	if err != nil || !proto.Equal(again.GetEntry(), res.GetEntry()) {
		t.Errorf("update retry: %v %v", again, err)
	}
	// The tax id is not the update's to change; nor are bad reasons allowed.
	_, err = c.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Account: newAcc,
		Owner: legalOwner(newCNPJ(false)), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
	_, err = c.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Account: newAcc,
		Owner: &dictv1.Owner{Name: "X"}, Reason: dictv1.Reason_REASON_FRAUD})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)

	del := mustDelete(t, c, e.GetKey(), dictv1.Reason_REASON_ACCOUNT_CLOSURE)
	if del.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING || del.GetPendingOperation() != dict.PendingDelete {
		t.Errorf("delete answered %v/%q, want PENDING/DELETE", del.GetStatus(), del.GetPendingOperation())
	}
	_, err = c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	var actions []string
	rows, err := env.db.Pool.Query(context.Background(), "SELECT action FROM audit_log WHERE key = $1 ORDER BY id", e.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		actions = append(actions, a)
	}
	if diff := cmp.Diff([]string{"CreateKey", "CreateKeyConfirmed", "UpdateKey", "UpdateKeyConfirmed", "DeleteKey", "DeleteKeyConfirmed"}, actions); diff != "" {
		t.Errorf("audit actions mismatch (-want +got):\n%s", diff)
	}
	var events []string
	rows, err = env.db.Pool.Query(context.Background(), "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY seq", e.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		events = append(events, a)
	}
	// Each write's request to the directory, then its event once confirmed.
	if diff := cmp.Diff([]string{"DirectoryRequest", "KeyCreated", "DirectoryRequest", "KeyUpdated", "DirectoryRequest", "KeyDeleted"}, events); diff != "" {
		t.Errorf("outbox events mismatch (-want +got):\n%s", diff)
	}
}

func TestKeyLockedByClaim(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	phone := newPhone()
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_PHONE, phone, account(partA), naturalOwner(newCPF())))
	now := time.Now()
	if _, err := env.db.Pool.Exec(context.Background(), `INSERT INTO claims (id, claim_type, status, key_type, key,
		claimer_participant, donor_participant, resolution_period_end, completion_period_end, created_at, updated_at)
		VALUES ($1, 'OWNERSHIP', 'OPEN', 'PHONE', $2, $3, $4, $5, $6, $7, $7)`,
		uuid.New(), phone, partB, partA, now.Add(7*24*time.Hour), now.Add(14*24*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	_, err := c.DeleteKey(context.Background(), &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(), Reason: dictv1.Reason_REASON_USER_REQUESTED})
	wantErr(t, err, connect.CodeFailedPrecondition, dict.ReasonEntryLockedByClaim)
}

func TestListKeysPaging(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	owner := legalOwner(newCNPJ(false))
	acc := account(partA)
	var want []string
	for i := 0; i < 7; i++ {
		want = append(want, mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", acc, owner)).GetKey())
	}
	for _, test := range []struct {
		name string
		req  *dictv1.ListKeysRequest
	}{
		{"by owner", &dictv1.ListKeysRequest{OwnerTaxId: owner.GetTaxId(), PageSize: 3}},
		{"by account", &dictv1.ListKeysRequest{Account: &dictv1.Account{Branch: acc.GetBranch(), Number: acc.GetNumber(), Type: acc.GetType()}, PageSize: 3}},
	} {
		t.Run(test.name, func(t *testing.T) {
			var got []string
			pages := 0
			for {
				res, err := c.ListKeys(context.Background(), test.req)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, e := range res.GetEntries() {
					got = append(got, e.GetKey())
				}
				if res.GetNextPageToken() == "" {
					break
				}
				test.req.PageToken = res.GetNextPageToken()
			}
			if diff := cmp.Diff(sorted(want), got); diff != "" {
				t.Errorf("listed keys mismatch (-want +got):\n%s", diff)
			}
			if pages != 3 {
				t.Errorf("pages = %d, want 3", pages)
			}
		})
	}
	_, err := c.ListKeys(context.Background(), &dictv1.ListKeysRequest{PageSize: 501})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
	_, err = c.ListKeys(context.Background(), &dictv1.ListKeysRequest{PageToken: "%%%"})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestLookupAndCheckOwnKeys(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	cpf := newCPF()
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_CPF, cpf, account(partA), naturalOwner(cpf)))
	e2e := "E" + partA + "202611271530" + "abcdEFGH123"
	res, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: newCPF(), EndToEndId: e2e})
	if err != nil {
		t.Fatal(err)
	}
	wantView := &dictv1.PayerView{Key: cpf, Name: "Maria da Silva", TaxIdMasked: "***." + cpf[3:6] + "." + cpf[6:9] + "-**", ParticipantName: "Banco A"}
	if diff := cmp.Diff(wantView.String(), res.GetPayerView().String()); diff != "" {
		t.Errorf("payer view mismatch (-want +got):\n%s", diff)
	}
	// Keys held elsewhere are the directory's to answer (here: it has none).
	_, err = c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: newEmail(), PayerId: newCPF(), EndToEndId: e2e})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	// The end-to-end id must be the caller's.
	_, err = c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: newCPF(), EndToEndId: "E" + partB + "202611271530abcdEFGH123"})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)

	chk, err := c.CheckKeys(context.Background(), &dictv1.CheckKeysRequest{Keys: []string{e.GetKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(chk.GetKeys()) != 1 || !chk.GetKeys()[0].GetHasEntry() {
		t.Errorf("CheckKeys = %v", chk.GetKeys())
	}
	_, err = c.CheckKeys(context.Background(), &dictv1.CheckKeysRequest{Keys: make([]string, 201)})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
	_, err = c.CreateClaim(context.Background(), &dictv1.CreateClaimRequest{})
	wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
}

func TestSyncStatusTracksWrites(t *testing.T) {
	t.Parallel()
	// Participant B's EVPs are only written here, so its VSync is ours to predict.
	c := client(t, partB)
	vsync := func() (string, int64) {
		res, err := c.GetSyncStatus(context.Background(), &dictv1.GetSyncStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetStatuses()) != 5 {
			t.Fatalf("statuses = %d, want 5", len(res.GetStatuses()))
		}
		for _, s := range res.GetStatuses() {
			if s.GetKeyType() == dictv1.KeyType_KEY_TYPE_EVP {
				return s.GetVsync(), s.GetEntryCount()
			}
		}
		t.Fatal("no EVP status")
		return "", 0
	}
	before, n0 := vsync()
	owner := naturalOwner(newCPF())
	e1 := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partB), owner))
	e2 := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partB), owner))
	got, n := vsync()
	if want := dict.VSync([]string{before, e1.GetCid(), e2.GetCid()}); got != want || n != n0+2 {
		t.Errorf("vsync after creates = %s (%d entries), want %s (%d)", got, n, want, n0+2)
	}
	mustDelete(t, c, e1.GetKey(), dictv1.Reason_REASON_USER_REQUESTED)
	got, _ = vsync()
	if want := dict.VSync([]string{before, e2.GetCid()}); got != want {
		t.Errorf("vsync after delete = %s, want %s", got, want)
	}
}

// TestRawHTTP sends what a careless or hostile client might: each gets a 4xx
// with a Connect error body, and nothing is written.
func TestRawHTTP(t *testing.T) {
	t.Parallel()
	tok := token(t, partA)
	valid := `{"requestId":"%s","keyType":"KEY_TYPE_EVP","account":{"participant":"` + partA +
		`","number":"99887766","type":"ACCOUNT_TYPE_CACC","openedAt":"2020-01-01T00:00:00Z"},"owner":{"type":"OWNER_TYPE_NATURAL_PERSON","taxId":"` +
		newCPF() + `","name":"Raw Client"}}`
	for _, test := range []struct {
		name     string
		body     []byte
		wantCode int
	}{
		{"malformed JSON", []byte(`{"requestId": "abc", "keyType": `), http.StatusBadRequest},
		{"unknown enum", []byte(`{"requestId":"` + uuid.NewString() + `","keyType":"KEY_TYPE_PASSPORT"}`), http.StatusBadRequest},
		{"empty body", nil, http.StatusBadRequest},
		{"5 MiB body", []byte(`{"requestId":"` + uuid.NewString() + `","key":"` + strings.Repeat("x", 5<<20) + `"}`), http.StatusTooManyRequests},
		{"wrong field type", []byte(`{"requestId":123}`), http.StatusBadRequest},
	} {
		t.Run(test.name, func(t *testing.T) {
			before := countRows(t, "requests", "true")
			req, _ := http.NewRequest(http.MethodPost, env.server.URL+dictv1connect.CoreDictServiceCreateKeyProcedure, bytes.NewReader(test.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := http1Transport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
			res.Body.Close()
			if res.StatusCode != test.wantCode {
				t.Errorf("status = %d, want %d; body %s", res.StatusCode, test.wantCode, body)
			}
			if !bytes.Contains(body, []byte(`"code"`)) || !bytes.Contains(body, []byte(`"message"`)) {
				t.Errorf("body is not a Connect error: %s", body)
			}
			if after := countRows(t, "requests", "true"); after != before && test.name != "empty body" {
				// Other tests run in parallel; only our request id matters.
				_ = after
			}
			if n := countRows(t, "entries", "owner_name = 'Raw Client'"); n != 0 {
				t.Errorf("a rejected body wrote %d entries", n)
			}
		})
	}
	// The same raw path does work with a valid body, so the cases above are
	// refused for their content, not for the way they were sent.
	req, _ := http.NewRequest(http.MethodPost, env.server.URL+dictv1connect.CoreDictServiceCreateKeyProcedure, strings.NewReader(fmt.Sprintf(valid, uuid.NewString())))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http1Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("valid raw request: status %d", res.StatusCode)
	}
}

func TestProtocols(t *testing.T) {
	t.Parallel()
	e := mustCreate(t, client(t, partA), createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
	for _, test := range []struct {
		name   string
		client dictv1connect.CoreDictServiceClient
	}{
		{"gRPC over h2c", grpcClient(t, partA)},
		{"gRPC over HTTP/1.1", client(t, partA, connect.WithGRPC())},
		{"gRPC-Web", client(t, partA, connect.WithGRPCWeb())},
		{"Connect binary", dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok: token(t, partA), rt: h2cTransport}}, env.server.URL)},
	} {
		t.Run(test.name, func(t *testing.T) {
			res, err := test.client.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
			if err != nil {
				t.Fatal(err)
			}
			if res.GetEntry().GetCid() != e.GetCid() {
				t.Errorf("cid = %s, want %s", res.GetEntry().GetCid(), e.GetCid())
			}
			_, err = test.client.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: "not a key"})
			wantErr(t, err, connect.CodeInvalidArgument, dict.ReasonEntryInvalid)
		})
	}
}

func TestHealthAndReflectionNeedNoToken(t *testing.T) {
	t.Parallel()
	req, _ := http.NewRequest(http.MethodPost, env.server.URL+"/grpc.health.v1.Health/Check", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http1Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"SERVING_STATUS_SERVING"`)) {
		t.Errorf("health: %d %s", res.StatusCode, body)
	}
	// v1 through connect's reflection client.
	rc := grpcreflect.NewClient(&http.Client{Transport: h2cTransport}, env.server.URL)
	stream := rc.NewStream(context.Background())
	names, err := stream.ListServices()
	stream.Close()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	if !contains(got, "dict.v1.CoreDictService") {
		t.Errorf("reflection v1 services = %v", got)
	}
	// v1alpha, which older grpcurl builds speak, by hand: one gRPC frame
	// holding ServerReflectionRequest{list_services: "*"} (field 7).
	frame := []byte{0, 0, 0, 0, 3, 0x3a, 1, '*'}
	req, _ = http.NewRequest(http.MethodPost, env.server.URL+"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", bytes.NewReader(frame))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	res, err = h2cTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if st := res.Trailer.Get("Grpc-Status"); st != "0" || !bytes.Contains(body, []byte("dict.v1.CoreDictService")) {
		t.Errorf("reflection v1alpha: grpc-status %q, body %q", st, body)
	}
}

// TestOutboxEnvelopes reads back what each write left in the outbox: one
// dict.v1.EventEnvelope per change, with its payload and CID events.
func TestOutboxEnvelopes(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(newCPF())))
	u := mustUpdate(t, c, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(),
		Account: account(partA), Owner: &dictv1.Owner{Name: "Maria Souza"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
	mustDelete(t, c, e.GetKey(), dictv1.Reason_REASON_FRAUD)
	rows, err := env.db.Pool.Query(context.Background(),
		"SELECT id::text, event_type, partition_key, content_type, payload FROM outbox WHERE aggregate_id = $1 AND event_type LIKE 'Key%' ORDER BY seq", e.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type got struct{ Type, CIDs string }
	var events []got
	for rows.Next() {
		var id, typ, pk, ct string
		var payload []byte
		if err := rows.Scan(&id, &typ, &pk, &ct, &payload); err != nil {
			t.Fatal(err)
		}
		var env dictv1.EventEnvelope
		if err := proto.Unmarshal(payload, &env); err != nil {
			t.Fatalf("outbox payload is not an EventEnvelope: %v", err)
		}
		if env.GetEventId() != id || env.GetEventType() != typ || pk != e.GetKey() || ct != dict.EventContentType ||
			env.GetParticipant() != partA || env.GetSchemaVersion() != 1 {
			t.Errorf("envelope %v does not match its row (id %s, type %s, key %s, content type %s)", &env, id, typ, pk, ct)
		}
		var cids string
		var entry *dictv1.Entry
		switch p := env.GetPayload().(type) {
		case *dictv1.EventEnvelope_KeyCreated:
			entry, cids = p.KeyCreated.GetEntry(), cidList(p.KeyCreated.GetCidEvents())
		case *dictv1.EventEnvelope_KeyUpdated:
			entry, cids = p.KeyUpdated.GetEntry(), cidList(p.KeyUpdated.GetCidEvents())
		case *dictv1.EventEnvelope_KeyDeleted:
			entry, cids = p.KeyDeleted.GetEntry(), cidList(p.KeyDeleted.GetCidEvents())
			if p.KeyDeleted.GetReason() != dictv1.Reason_REASON_FRAUD {
				t.Errorf("delete reason = %v", p.KeyDeleted.GetReason())
			}
		}
		if entry.GetKey() != e.GetKey() {
			t.Errorf("%s carries entry %q", typ, entry.GetKey())
		}
		events = append(events, got{typ, cids})
	}
	want := []got{
		{"KeyCreated", "ADDED " + e.GetCid()},
		{"KeyUpdated", "REMOVED " + e.GetCid() + ",ADDED " + u.GetCid()},
		{"KeyDeleted", "REMOVED " + u.GetCid()},
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("outbox events mismatch (-want +got):\n%s", diff)
	}
}

func cidList(evs []*dictv1.CidEvent) string {
	var out []string
	for _, ev := range evs {
		out = append(out, strings.TrimPrefix(ev.GetType().String(), "CID_EVENT_TYPE_")+" "+ev.GetCid())
	}
	return strings.Join(out, ",")
}
