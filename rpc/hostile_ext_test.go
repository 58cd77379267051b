package rpc_test

// The hostile-input suite: forged and expired tokens, cross-participant
// reads and writes, SQL metacharacters and 10 KB strings in every string
// field of every request, invalid UTF-8, oversized, truncated and malformed
// bodies, 10,000-key requests and unknown enum numbers, against a real
// server (its own database, Redis, Pulsar) over Connect JSON, Connect
// proto, gRPC and gRPC-Web. After each case: the code is the expected one,
// nothing panicked, no internal detail reached the client, and nothing was
// written. At the end: no key or tax id of the run reached the log.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/internal/logmask"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// codeOK stands for success among the expected codes.
const codeOK connect.Code = 0

// internalDetail is what no error a client gets may mention: SQL and the
// driver, stacks and Go internals, hosts and the infrastructure.
var internalDetail = regexp.MustCompile(`(?i)\bsql|pgx|pgconn|sqlstate|postgres|panic|goroutine|runtime\.|\.go:\d|github\.com|/root/|/work/|\*?dictv1\.|127\.0\.0\.1|localhost|\bredis|rueidis|pulsar|dial tcp|connection refused|violates|constraint|relation "|syntax error at|(?-i:ERROR:)`)

const (
	sqlMeta     = `' OR '1'='1'; DROP TABLE entries; --`
	tenKB       = 10 << 10
	hostileName = "Hostile Suite Owner"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostileEnv is the suite's own core-dict: its own database, so that "nothing
// was written" can be checked table by table while other tests run.
type hostileEnv struct {
	db   *testdb.DB
	st   *stack
	url  string
	logs *syncBuffer
	// spans records every span the suite's server and service end.
	spans *tracetest.SpanRecorder
	// the fixtures: A's and B's keys, B's claim, and every raw key and tax
	// id the run used (none may reach the log)
	keyA, keyB      *dictv1.Entry
	claimB          string
	reqB            string
	secrets         []string
	tokA, tokB      string
	tokAReadOnly    string
	rsaKID, ecKID   string
	clients         map[string]func(tok string) dictv1connect.CoreDictServiceClient
	protocolsInTurn []string
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	ctx := context.Background()
	db, err := testdb.Create(ctx, "rpc_hostile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	h := &hostileEnv{db: db, logs: &syncBuffer{}, rsaKID: "rsa-1", ecKID: "ec-1"}
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{
		HS256Secret:  apiSecret,
		JWKSFile:     writeJWKS(t, testKeys()),
		Participants: []string{partA, partB},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The edge limiters of production (redis_rate's GCRA, per IP and per
	// account), generous enough never to refuse a case.
	rc := cachelayer.DefaultConfig()
	rc.URL = redisTestURL()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	redis, err := cachelayer.NewClient(cctx, rc, cachelayer.WithRegisterer(prometheus.NewRegistry()))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(redis.Close)
	ipLimiter, accountLimiter := edgeLimiters(t, redis, "hostile-"+db.Name, 100000)
	logger := logmask.Logger(slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h.spans = tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	h.st, err = newStackOpts(db, redisTestURL(), stackOptions{
		logger: logger, auth: auth, tp: tp, ipLimiter: ipLimiter, accountLimiter: accountLimiter,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.st.close)
	h.url = h.st.server.URL
	h.tokA, h.tokB = token(t, partA), token(t, partB)
	h.tokAReadOnly = token(t, partA, rpc.ScopeRead)
	h.clients = map[string]func(string) dictv1connect.CoreDictServiceClient{
		"connect+json": func(tok string) dictv1connect.CoreDictServiceClient {
			return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, http1Transport}}, h.url, connect.WithProtoJSON())
		},
		"connect+proto": func(tok string) dictv1connect.CoreDictServiceClient {
			return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, http1Transport}}, h.url)
		},
		"grpc": func(tok string) dictv1connect.CoreDictServiceClient {
			return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, h2cTransport}}, h.url, connect.WithGRPC())
		},
		"grpc-web": func(tok string) dictv1connect.CoreDictServiceClient {
			return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, http1Transport}}, h.url, connect.WithGRPCWeb())
		},
	}
	h.protocolsInTurn = []string{"connect+json", "connect+proto", "grpc", "grpc-web"}
	h.fixtures(t)
	return h
}

// edgeLimiters are main.go's request limiters with rps per IP and per
// account.
func edgeLimiters(t *testing.T, redis *cachelayer.Client, prefix string, rps int) (ip, account rpc.KeyLimiter) {
	t.Helper()
	rdb := cachelayer.NewRueidisScripter(redis)
	ip, err := cachelayer.NewIPRateLimiter(rdb, cachelayer.RatePerSecond(rps), cachelayer.WithLimitKeyPrefix("limit:ip:"+prefix),
		cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	account, err = cachelayer.NewAccountRateLimiter(rdb, cachelayer.RatePerSecond(rps), cachelayer.WithLimitKeyPrefix("limit:acc:"+prefix),
		cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	return ip, account
}

// fixtures: a CPF key of A's, an e-mail key of B's, and a claim of B's; then
// waits until the directory has answered everything, so the database is
// still from here on unless a case writes.
func (h *hostileEnv) fixtures(t *testing.T) {
	t.Helper()
	a, b := h.clients["connect+json"](h.tokA), h.clients["connect+json"](h.tokB)
	cpfA := newCPF()
	h.keyA = mustCreate(t, a, createReq(dictv1.KeyType_KEY_TYPE_CPF, cpfA, account(partA), &dictv1.Owner{
		Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: cpfA, Name: hostileName}))
	cpfB, emailB := newCPF(), newEmail()
	reqB := createReq(dictv1.KeyType_KEY_TYPE_EMAIL, emailB, account(partB), naturalOwner(cpfB))
	h.reqB = reqB.GetRequestId()
	h.keyB = mustCreate(t, b, reqB)
	phone, cpfClaimer := newPhone(), newCPF()
	res, err := b.CreateClaim(context.Background(), &dictv1.CreateClaimRequest{
		RequestId: uuid.NewString(), Type: dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP, KeyType: dictv1.KeyType_KEY_TYPE_PHONE,
		Key: phone, ClaimerAccount: account(partB), Claimer: naturalOwner(cpfClaimer)})
	if err != nil {
		t.Fatalf("fixture claim: %v", err)
	}
	h.claimB = res.GetClaim().GetId()
	h.secrets = append(h.secrets, cpfA, cpfB, emailB, phone, cpfClaimer)
	h.awaitStill(t)
	if _, err := b.GetClaim(context.Background(), &dictv1.GetClaimRequest{Id: h.claimB}); err != nil {
		t.Fatalf("B cannot read its own claim fixture: %v", err)
	}
}

// awaitStill waits until no write is pending (entries, claims, outbox) and
// the tables stay the same for a while.
func (h *hostileEnv) awaitStill(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	prev, same := "", 0
	for time.Now().Before(deadline) {
		var pending int
		err := h.db.Pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM entries WHERE pending_op IS NOT NULL) +
			(SELECT count(*) FROM claims WHERE pending_action IS NOT NULL) +
			(SELECT count(*) FROM outbox_publication WHERE NOT published)`).Scan(&pending)
		if err != nil {
			t.Fatal(err)
		}
		fp := h.fingerprint(t)
		if pending == 0 && fp == prev {
			if same++; same >= 5 {
				return
			}
		} else {
			same = 0
		}
		prev = fp
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the suite's database never settled: %s", prev)
}

// writeTables are the tables a request writes.
var writeTables = []string{"entries", "claims", "outbox", "requests", "audit_log"}

// fingerprint is the row count and a hash of the contents of each table a
// request may write.
func (h *hostileEnv) fingerprint(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, table := range writeTables {
		var n int64
		var sum string
		err := h.db.Pool.QueryRow(context.Background(),
			"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0)::text FROM "+table+" t").Scan(&n, &sum)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%d/%s ", table, n, sum)
	}
	return b.String()
}

// outcome is what a case got back: the code (codeOK for success), the
// HTTP status, and all the text the client received with an error.
type outcome struct {
	code   connect.Code
	status int
	text   string
	err    error
}

func typedOutcome(err error) outcome {
	if err == nil {
		return outcome{code: codeOK}
	}
	o := outcome{code: connect.CodeOf(err), err: err}
	var ce *connect.Error
	if errors.As(err, &ce) {
		var b strings.Builder
		b.WriteString(ce.Message())
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if j, jerr := protojson.Marshal(v); jerr == nil {
					b.WriteString(" ")
					b.Write(j)
				}
			}
		}
		for k, vs := range ce.Meta() {
			b.WriteString(" " + k + ": " + strings.Join(vs, ","))
		}
		o.text = b.String()
	} else {
		o.text = err.Error()
	}
	return o
}

// rawRequest is one hand-made HTTP request.
type rawRequest struct {
	path        string // default CreateKey
	method      string // default POST
	contentType string
	body        []byte
	header      map[string]string
	h2c         bool
}

func (h *hostileEnv) do(t *testing.T, r rawRequest) outcome {
	t.Helper()
	if r.path == "" {
		r.path = dictv1connect.CoreDictServiceCreateKeyProcedure
	}
	if r.method == "" {
		r.method = http.MethodPost
	}
	req, err := http.NewRequest(r.method, h.url+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Authorization", "Bearer "+h.tokA)
	if strings.HasPrefix(r.contentType, "application/grpc") {
		req.Header.Set("TE", "trailers")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	rt := http.RoundTripper(http1Transport)
	if r.h2c {
		rt = h2cTransport
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	o := outcome{status: res.StatusCode, text: string(body)}
	ct := res.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		st, msg := grpcWebTrailers(res.Header, body)
		o.code, o.text = grpcCode(st), msg+" "+string(body)
	case strings.HasPrefix(ct, "application/grpc"):
		st := res.Trailer.Get("Grpc-Status")
		msg := res.Trailer.Get("Grpc-Message")
		if st == "" {
			st, msg = res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message")
		}
		if m, err := url.PathUnescape(msg); err == nil {
			msg = m
		}
		o.code, o.text = grpcCode(st), msg+" "+string(body)
	case res.StatusCode == http.StatusOK:
		o.code = codeOK
	default:
		var e struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			if err := o.code.UnmarshalText([]byte(e.Code)); err != nil {
				o.code = connect.CodeUnknown
			}
		} else {
			o.code = connect.CodeUnknown
		}
	}
	return o
}

func grpcCode(s string) connect.Code {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		return connect.CodeUnknown
	}
	return connect.Code(n)
}

// grpcWebTrailers reads grpc-status and grpc-message from a gRPC-Web
// response: the headers of a trailers-only answer, or the trailer frame.
func grpcWebTrailers(h http.Header, body []byte) (string, string) {
	if st := h.Get("Grpc-Status"); st != "" {
		return st, h.Get("Grpc-Message")
	}
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		if 5+n > len(body) {
			break
		}
		if body[0]&0x80 != 0 {
			var st, msg string
			for _, line := range strings.Split(string(body[5:5+n]), "\r\n") {
				k, v, _ := strings.Cut(line, ":")
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "grpc-status":
					st = strings.TrimSpace(v)
				case "grpc-message":
					msg = strings.TrimSpace(v)
				}
			}
			return st, msg
		}
		body = body[5+n:]
	}
	return "", ""
}

// envelope frames msg as one gRPC / Connect streaming message.
func envelope(msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// hostileCase is one case: run returns what the client got.
type hostileCase struct {
	name string
	run  func(t *testing.T) outcome
	want connect.Code
	// status, when set, is the HTTP status a raw request must get.
	status int
	// check, when set, looks further at a successful answer.
	check func(t *testing.T, o outcome)
}

// TestHostileInputs runs the suite. It is not parallel: its panic count is
// the process's, and the other tests' parallel phase waits until it ends.
func TestHostileInputs(t *testing.T) {
	h := newHostileEnv(t)
	var cases []hostileCase
	cases = append(cases, h.tokenCases(t)...)
	cases = append(cases, h.crossParticipantCases(t)...)
	cases = append(cases, h.fieldCases(t)...)
	cases = append(cases, h.bodyCases(t)...)
	cases = append(cases, h.sizeAndEnumCases(t)...)
	if len(cases) < 60 {
		t.Fatalf("only %d cases", len(cases))
	}
	t.Logf("%d hostile cases", len(cases))
	names := map[string]bool{}
	before := h.fingerprint(t)
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			panics := rpc.RecoveredPanics()
			o := c.run(t)
			t.Logf("%s: %.160q", codeName(o.code), o.text)
			if o.code != c.want {
				t.Errorf("code = %v, want %v; got HTTP %d %.300q", codeName(o.code), codeName(c.want), o.status, o.text)
			}
			if c.status != 0 && o.status != c.status {
				t.Errorf("HTTP status = %d, want %d; body %.300s", o.status, c.status, o.text)
			}
			if n := rpc.RecoveredPanics() - panics; n != 0 {
				t.Errorf("the server recovered %d panics", n)
			}
			if m := internalDetail.FindString(o.text); m != "" {
				t.Errorf("the answer leaks internal detail %q: %.500s", m, o.text)
			}
			if c.want != codeOK && len(o.text) > 2<<10 {
				t.Errorf("the error is %d bytes long: %.200s...", len(o.text), o.text)
			}
			if c.check != nil {
				c.check(t, o)
			}
			if after := h.fingerprint(t); after != before {
				t.Errorf("the case wrote:\nbefore %s\nafter  %s", before, after)
				before = after
			}
		})
	}
	// No panic was logged, and no raw key or tax id of the run reached the
	// log, however the requests failed.
	logs := h.logs.String()
	if strings.Contains(logs, "panic recovered") {
		t.Errorf("a panic was logged")
	}
	for _, s := range h.secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the raw value %q", s)
		}
	}
	// Nor any span attribute, event or status.
	var spanText strings.Builder
	for _, sp := range h.spans.Ended() {
		fmt.Fprintf(&spanText, "%s %s %v\n", sp.Name(), sp.Status().Description, sp.Attributes())
		for _, ev := range sp.Events() {
			fmt.Fprintf(&spanText, "  %s %v\n", ev.Name, ev.Attributes)
		}
	}
	if spanText.Len() == 0 {
		t.Errorf("no span was recorded; the span check proves nothing")
	}
	for _, s := range h.secrets {
		if strings.Contains(spanText.String(), s) {
			t.Errorf("a span holds the raw value %q", s)
		}
	}
	if !strings.Contains(logs, `"msg":"rpc"`) {
		t.Errorf("the capture holds no request log; the check above proves nothing:\n%.2000s", logs)
	}
}

func codeName(c connect.Code) string {
	if c == codeOK {
		return "ok"
	}
	return c.String()
}

// --- tokens ------------------------------------------------------------------

// serverClaims are the claims of a token the suite's server accepts; edit
// them to break it.
func serverClaims(ispb string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub": "hostile", "ispb": ispb, "aud": rpc.DefaultAudience,
		"scope": "dict.read dict.write dict.lookup dict.claims",
		"iat":   now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func (h *hostileEnv) tokenCases(t *testing.T) []hostileCase {
	k := testKeys()
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, "", c, apiSecret) }
	edit := func(f func(jwt.MapClaims)) jwt.MapClaims { c := serverClaims(partA); f(c); return c }
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&k.rsa.PublicKey))})
	otherKey := testKeysOther()
	valid := hs(serverClaims(partA))
	parts := strings.Split(valid, ".")
	// A's signature over a payload rewritten to act for B.
	forgedPayload := func() string {
		c := serverClaims(partB)
		j, _ := json.Marshal(c)
		return parts[0] + "." + b64(j) + "." + parts[2]
	}()
	flipSig := func(tok string) string {
		p := strings.Split(tok, ".")
		s := []byte(p[2])
		if s[0] == 'A' {
			s[0] = 'B'
		} else {
			s[0] = 'A'
		}
		return p[0] + "." + p[1] + "." + string(s)
	}
	rawToken := func(header, payload string) string {
		return b64([]byte(header)) + "." + b64([]byte(payload)) + "." + parts[2]
	}
	getKey := func(proto, tok string) func(t *testing.T) outcome {
		return func(t *testing.T) outcome {
			_, err := h.clients[proto](tok).GetKey(context.Background(), &dictv1.GetKeyRequest{Key: h.keyA.GetKey()})
			return typedOutcome(err)
		}
	}
	createKey := func(tok string) func(t *testing.T) outcome {
		return func(t *testing.T) outcome {
			_, err := h.clients["connect+json"](tok).CreateKey(context.Background(),
				createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
			return typedOutcome(err)
		}
	}
	un := connect.CodeUnauthenticated
	var cases []hostileCase
	add := func(name string, tok string, want connect.Code) {
		proto := h.protocolsInTurn[len(cases)%len(h.protocolsInTurn)]
		cases = append(cases, hostileCase{name: "token/" + name + " (" + proto + ")", run: getKey(proto, tok), want: want})
	}
	add("none", "", un)
	add("alg none", sign(t, jwt.SigningMethodNone, "", serverClaims(partA), jwt.UnsafeAllowNoneSignatureType), un)
	add("alg none without signature", b64([]byte(`{"alg":"none","typ":"JWT"}`))+"."+b64(must(json.Marshal(serverClaims(partA))))+".", un)
	add("alg NONE", rawToken(`{"alg":"NONE","typ":"JWT"}`, string(must(json.Marshal(serverClaims(partA))))), un)
	add("HS512", sign(t, jwt.SigningMethodHS512, "", serverClaims(partA), apiSecret), un)
	add("HS384", sign(t, jwt.SigningMethodHS384, "", serverClaims(partA), apiSecret), un)
	add("PS256 with the JWKS RSA key", sign(t, jwt.SigningMethodPS256, h.rsaKID, serverClaims(partA), k.rsa), un)
	add("unknown alg", rawToken(`{"alg":"XS999","typ":"JWT"}`, string(must(json.Marshal(serverClaims(partA))))), un)
	add("HS256 with another secret", sign(t, jwt.SigningMethodHS256, "", serverClaims(partA), otherSecret), un)
	add("payload rewritten to act for B", forgedPayload, un)
	add("HS256 signature flipped", flipSig(valid), un)
	add("expired", hs(edit(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() })), un)
	add("expired long ago", hs(edit(func(c jwt.MapClaims) { c["exp"] = 1 })), un)
	add("exp negative", hs(edit(func(c jwt.MapClaims) { c["exp"] = -1 })), un)
	add("exp 1e300", hs(edit(func(c jwt.MapClaims) { c["exp"] = 1e300 })), un)
	add("exp a string", hs(edit(func(c jwt.MapClaims) { c["exp"] = "never" })), un)
	add("no exp", hs(edit(func(c jwt.MapClaims) { delete(c, "exp") })), un)
	add("not valid yet", hs(edit(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), un)
	add("issued in the future", hs(edit(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() })), un)
	add("wrong audience", hs(edit(func(c jwt.MapClaims) { c["aud"] = "core-bank" })), un)
	add("no audience", hs(edit(func(c jwt.MapClaims) { delete(c, "aud") })), un)
	add("audience a number", hs(edit(func(c jwt.MapClaims) { c["aud"] = 7 })), un)
	add("no participant", hs(edit(func(c jwt.MapClaims) { delete(c, "ispb") })), un)
	add("participant empty", hs(edit(func(c jwt.MapClaims) { c["ispb"] = "" })), un)
	add("participant a number", hs(edit(func(c jwt.MapClaims) { c["ispb"] = 12345678 })), un)
	add("participant with SQL", hs(edit(func(c jwt.MapClaims) { c["ispb"] = sqlMeta })), un)
	add("no subject", hs(edit(func(c jwt.MapClaims) { delete(c, "sub") })), un)
	add("scope an array", hs(edit(func(c jwt.MapClaims) { c["scope"] = []string{"dict.admin"} })), un)
	add("alg confusion: HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, h.rsaKID, serverClaims(partA), rsaPEM), un)
	add("alg confusion: HS256 keyed with the RSA modulus", sign(t, jwt.SigningMethodHS256, h.rsaKID, serverClaims(partA), k.rsa.N.Bytes()), un)
	add("RS256 unknown kid", sign(t, jwt.SigningMethodRS256, "rsa-9", serverClaims(partA), k.rsa), un)
	add("RS256 kid path traversal", sign(t, jwt.SigningMethodRS256, "../../etc/passwd", serverClaims(partA), k.rsa), un)
	add("RS256 no kid", sign(t, jwt.SigningMethodRS256, "", serverClaims(partA), k.rsa), un)
	add("RS256 signed by a key not in the JWKS", sign(t, jwt.SigningMethodRS256, h.rsaKID, serverClaims(partA), otherKey.rsa), un)
	add("RS256 naming the EC key", sign(t, jwt.SigningMethodRS256, h.ecKID, serverClaims(partA), k.rsa), un)
	add("ES256 naming the RSA key", sign(t, jwt.SigningMethodES256, h.rsaKID, serverClaims(partA), k.ec), un)
	add("ES256 naming the skipped Ed25519 key", sign(t, jwt.SigningMethodES256, "ed-1", serverClaims(partA), k.ec), un)
	add("ES256 signed by another EC key", sign(t, jwt.SigningMethodES256, h.ecKID, serverClaims(partA), otherKey.ec), un)
	add("ES256 signature flipped", flipSig(sign(t, jwt.SigningMethodES256, h.ecKID, serverClaims(partA), k.ec)), un)
	add("RS256 expired", sign(t, jwt.SigningMethodRS256, h.rsaKID, edit(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), k.rsa), un)
	add("ES256 wrong audience", sign(t, jwt.SigningMethodES256, h.ecKID, edit(func(c jwt.MapClaims) { c["aud"] = "other" }), k.ec), un)
	add("four segments", valid+".extra", un)
	add("garbage", "not-a-token", un)
	add("10 KB token", strings.Repeat("a", tenKB), un)
	add("invalid UTF-8 token", "eyJ\xff\xfe.eyJ.sig", un)
	// Controls: the same server takes the real thing.
	add("valid RS256 (control)", sign(t, jwt.SigningMethodRS256, h.rsaKID, serverClaims(partA), k.rsa), codeOK)
	add("valid ES256 (control)", sign(t, jwt.SigningMethodES256, h.ecKID, serverClaims(partA), k.ec), codeOK)
	add("participant not served", hs(serverClaims(partC)), connect.CodePermissionDenied)
	cases = append(cases,
		hostileCase{name: "token/expired on a write", run: createKey(hs(edit(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }))), want: un},
		hostileCase{name: "token/read scope on a write", run: createKey(h.tokAReadOnly), want: connect.CodePermissionDenied},
		hostileCase{name: "token/two Authorization headers", run: func(t *testing.T) outcome {
			return h.do(t, rawRequest{path: dictv1connect.CoreDictServiceGetKeyProcedure, contentType: "application/json",
				body: []byte(`{"key":"` + h.keyA.GetKey() + `"}`), header: map[string]string{"Authorization": "Bearer " + valid + ", Bearer " + valid}})
		}, want: un},
		hostileCase{name: "token/basic scheme", run: func(t *testing.T) outcome {
			return h.do(t, rawRequest{path: dictv1connect.CoreDictServiceGetKeyProcedure, contentType: "application/json",
				body: []byte(`{"key":"` + h.keyA.GetKey() + `"}`), header: map[string]string{"Authorization": "Basic YTpi"}})
		}, want: un},
	)
	return cases
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// testKeysOther is a second key pair, never in any JWKS.
var testKeysOther = sync.OnceValue(func() keys {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return keys{rsa: r, ec: e}
})

// --- cross-participant ----------------------------------------------------------

func (h *hostileEnv) crossParticipantCases(t *testing.T) []hostileCase {
	ctx := context.Background()
	a := h.clients["connect+json"](h.tokA)
	ag := h.clients["grpc"](h.tokA)
	keyB := h.keyB.GetKey()
	call := func(f func() error) func(t *testing.T) outcome {
		return func(t *testing.T) outcome { return typedOutcome(f()) }
	}
	nf, pd := connect.CodeNotFound, connect.CodePermissionDenied
	return []hostileCase{
		{name: "cross/A reads B's key", want: nf, run: call(func() error {
			_, err := a.GetKey(ctx, &dictv1.GetKeyRequest{Key: keyB})
			return err
		})},
		{name: "cross/A reads B's key over gRPC", want: nf, run: call(func() error {
			_, err := ag.GetKey(ctx, &dictv1.GetKeyRequest{Key: keyB, KeyType: dictv1.KeyType_KEY_TYPE_EMAIL})
			return err
		})},
		{name: "cross/A updates B's key", want: nf, run: call(func() error {
			_, err := a.UpdateKey(ctx, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: keyB, Account: account(partA),
				Owner: &dictv1.Owner{Name: "Hijack"}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
		{name: "cross/A moves its key to B's account", want: pd, run: call(func() error {
			_, err := a.UpdateKey(ctx, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: h.keyA.GetKey(), Account: account(partB),
				Owner: &dictv1.Owner{Name: hostileName}, Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
		{name: "cross/A deletes B's key", want: nf, run: call(func() error {
			_, err := a.DeleteKey(ctx, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: keyB, Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
		{name: "cross/A creates a key on B's account", want: pd, run: call(func() error {
			_, err := a.CreateKey(ctx, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partB), naturalOwner(newCPF())))
			return err
		})},
		{name: "cross/A creates B's key again on its own account", want: connect.CodeAlreadyExists, run: call(func() error {
			_, err := a.CreateKey(ctx, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, keyB, account(partA), naturalOwner(newCPF())))
			return err
		})},
		{name: "cross/A replays B's request id", want: connect.CodeAlreadyExists, run: func(t *testing.T) outcome {
			res, err := a.CreateKey(ctx, &dictv1.CreateKeyRequest{RequestId: h.reqB, KeyType: dictv1.KeyType_KEY_TYPE_EVP,
				Account: account(partA), Owner: naturalOwner(newCPF())})
			if err == nil && res.GetEntry().GetAccount().GetParticipant() == partB {
				t.Errorf("A got B's entry back: %v", res.GetEntry())
			}
			return typedOutcome(err)
		}},
		{name: "cross/A lists B's account", want: codeOK, run: func(t *testing.T) outcome {
			res, err := a.ListKeys(ctx, &dictv1.ListKeysRequest{Account: h.keyB.GetAccount()})
			if n := len(res.GetEntries()); n != 0 {
				t.Errorf("A listed %d of B's entries", n)
			}
			return typedOutcome(err)
		}},
		{name: "cross/A lists by B's owner tax id", want: codeOK, run: func(t *testing.T) outcome {
			res, err := a.ListKeys(ctx, &dictv1.ListKeysRequest{OwnerTaxId: h.keyB.GetOwner().GetTaxId()})
			if n := len(res.GetEntries()); n != 0 {
				t.Errorf("A listed %d of B's entries", n)
			}
			return typedOutcome(err)
		}},
		{name: "cross/A reads B's claim", want: nf, run: call(func() error {
			_, err := a.GetClaim(ctx, &dictv1.GetClaimRequest{Id: h.claimB})
			return err
		})},
		{name: "cross/A lists claims and sees none of B's", want: codeOK, run: func(t *testing.T) outcome {
			res, err := a.ListClaims(ctx, &dictv1.ListClaimsRequest{AsClaimer: true, AsDonor: true})
			for _, c := range res.GetClaims() {
				if c.GetId() == h.claimB {
					t.Errorf("A listed B's claim")
				}
			}
			return typedOutcome(err)
		}},
		{name: "cross/A acknowledges B's claim", want: nf, run: call(func() error {
			_, err := a.AcknowledgeClaim(ctx, &dictv1.AcknowledgeClaimRequest{Id: h.claimB})
			return err
		})},
		{name: "cross/A confirms B's claim", want: nf, run: call(func() error {
			_, err := a.ConfirmClaim(ctx, &dictv1.ConfirmClaimRequest{Id: h.claimB, Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
		{name: "cross/A cancels B's claim", want: nf, run: call(func() error {
			_, err := a.CancelClaim(ctx, &dictv1.CancelClaimRequest{Id: h.claimB, Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
		{name: "cross/A completes B's claim", want: nf, run: call(func() error {
			_, err := a.CompleteClaim(ctx, &dictv1.CompleteClaimRequest{Id: h.claimB, RequestId: uuid.NewString()})
			return err
		})},
		{name: "cross/A claims for B's account", want: pd, run: call(func() error {
			_, err := a.CreateClaim(ctx, &dictv1.CreateClaimRequest{RequestId: uuid.NewString(), Type: dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP,
				KeyType: dictv1.KeyType_KEY_TYPE_PHONE, Key: newPhone(), ClaimerAccount: account(partB), Claimer: naturalOwner(newCPF())})
			return err
		})},
		{name: "cross/B's token with A's key over gRPC-Web", want: nf, run: call(func() error {
			_, err := h.clients["grpc-web"](h.tokB).DeleteKey(ctx, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: h.keyA.GetKey(),
				Reason: dictv1.Reason_REASON_USER_REQUESTED})
			return err
		})},
	}
}

// --- every string field ---------------------------------------------------------

// fieldBase is a request that is valid but for the field a case breaks.
type fieldBase struct {
	procedure string
	msg       proto.Message
}

func (h *hostileEnv) fieldBases() []fieldBase {
	own := h.keyA.GetKey()
	cpf := newCPF()
	return []fieldBase{
		{"CreateKey", createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), account(partA), naturalOwner(cpf))},
		{"GetKey", &dictv1.GetKeyRequest{Key: own}},
		{"ListKeys", &dictv1.ListKeysRequest{OwnerTaxId: cpf, PageSize: 10}},
		{"UpdateKey", &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: own, Account: h.keyA.GetAccount(),
			Owner: &dictv1.Owner{Name: hostileName}, Reason: dictv1.Reason_REASON_USER_REQUESTED}},
		{"DeleteKey", &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: own, Reason: dictv1.Reason_REASON_USER_REQUESTED}},
		{"LookupKey", &dictv1.LookupKeyRequest{Key: own, PayerId: cpf, EndToEndId: newE2E()}},
		{"CheckKeys", &dictv1.CheckKeysRequest{Keys: []string{own}}},
		{"CreditPayment", &dictv1.CreditPaymentRequest{PayerId: cpf, EndToEndId: newE2E()}},
		{"CreateClaim", &dictv1.CreateClaimRequest{RequestId: uuid.NewString(), Type: dictv1.ClaimType_CLAIM_TYPE_OWNERSHIP,
			KeyType: dictv1.KeyType_KEY_TYPE_PHONE, Key: newPhone(), ClaimerAccount: account(partA), Claimer: naturalOwner(cpf)}},
		{"GetClaim", &dictv1.GetClaimRequest{Id: uuid.NewString()}},
		{"ListClaims", &dictv1.ListClaimsRequest{AsClaimer: true}},
		{"AcknowledgeClaim", &dictv1.AcknowledgeClaimRequest{Id: uuid.NewString()}},
		{"ConfirmClaim", &dictv1.ConfirmClaimRequest{Id: uuid.NewString(), Reason: dictv1.Reason_REASON_USER_REQUESTED}},
		{"CancelClaim", &dictv1.CancelClaimRequest{Id: uuid.NewString(), Reason: dictv1.Reason_REASON_USER_REQUESTED}},
		{"CompleteClaim", &dictv1.CompleteClaimRequest{Id: uuid.NewString(), RequestId: uuid.NewString()}},
	}
}

// stringFields lists the paths of every string field of md, into nested
// messages (but not well-known types).
func stringFields(md protoreflect.MessageDescriptor, prefix string) []string {
	var out []string
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		switch {
		case f.Kind() == protoreflect.StringKind:
			out = append(out, prefix+string(f.Name()))
		case f.Kind() == protoreflect.MessageKind && !f.IsList() && !strings.HasPrefix(string(f.Message().FullName()), "google.protobuf."):
			out = append(out, stringFields(f.Message(), prefix+string(f.Name())+".")...)
		}
	}
	return out
}

// setPath sets the string field at path (a.b.c) of m to v; a repeated field
// becomes [v].
func setPath(m protoreflect.Message, path, v string) {
	name, rest, nested := strings.Cut(path, ".")
	f := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if nested {
		setPath(m.Mutable(f).Message(), rest, v)
		return
	}
	if f.IsList() {
		l := m.NewField(f).List()
		l.Append(protoreflect.ValueOfString(v))
		m.Set(f, protoreflect.ValueOfList(l))
		return
	}
	m.Set(f, protoreflect.ValueOfString(v))
}

// callAny calls procedure with req on c.
func callAny(ctx context.Context, c dictv1connect.CoreDictServiceClient, procedure string, req proto.Message) error {
	var err error
	switch r := req.(type) {
	case *dictv1.CreateKeyRequest:
		_, err = c.CreateKey(ctx, r)
	case *dictv1.GetKeyRequest:
		_, err = c.GetKey(ctx, r)
	case *dictv1.ListKeysRequest:
		_, err = c.ListKeys(ctx, r)
	case *dictv1.UpdateKeyRequest:
		_, err = c.UpdateKey(ctx, r)
	case *dictv1.DeleteKeyRequest:
		_, err = c.DeleteKey(ctx, r)
	case *dictv1.LookupKeyRequest:
		_, err = c.LookupKey(ctx, r)
	case *dictv1.CheckKeysRequest:
		_, err = c.CheckKeys(ctx, r)
	case *dictv1.CreditPaymentRequest:
		_, err = c.CreditPayment(ctx, r)
	case *dictv1.CreateClaimRequest:
		_, err = c.CreateClaim(ctx, r)
	case *dictv1.GetClaimRequest:
		_, err = c.GetClaim(ctx, r)
	case *dictv1.ListClaimsRequest:
		_, err = c.ListClaims(ctx, r)
	case *dictv1.AcknowledgeClaimRequest:
		_, err = c.AcknowledgeClaim(ctx, r)
	case *dictv1.ConfirmClaimRequest:
		_, err = c.ConfirmClaim(ctx, r)
	case *dictv1.CancelClaimRequest:
		_, err = c.CancelClaim(ctx, r)
	case *dictv1.CompleteClaimRequest:
		_, err = c.CompleteClaim(ctx, r)
	default:
		return fmt.Errorf("no call for %s (%T)", procedure, req)
	}
	return err
}

// textFields are free text: SQL metacharacters in them are data, not an
// error. Their SQL cases are sent where nothing may be written (another
// participant's key, an unknown claim) and must come back NOT_FOUND.
var textFields = map[string]bool{"owner.name": true, "owner.trade_name": true, "claimer.name": true, "claimer.trade_name": true}

func (h *hostileEnv) fieldCases(t *testing.T) []hostileCase {
	var cases []hostileCase
	payloads := []struct{ name, value string }{
		{"SQL metacharacters", sqlMeta},
		{"10 KB", strings.Repeat("9", tenKB/2) + strings.Repeat("ç", tenKB/4)},
	}
	n := 0
	for _, base := range h.fieldBases() {
		for _, path := range stringFields(base.msg.ProtoReflect().Descriptor(), "") {
			for _, p := range payloads {
				req := proto.Clone(base.msg)
				setPath(req.ProtoReflect(), path, p.value)
				want := connect.CodeInvalidArgument
				if textFields[path] && p.name == "SQL metacharacters" {
					// Valid text: sent for B's key (UpdateKey) or an unknown
					// one, so that it goes through to the store and must
					// come back NOT_FOUND without writing.
					switch r := req.(type) {
					case *dictv1.UpdateKeyRequest:
						r.Key = h.keyB.GetKey()
						want = connect.CodeNotFound
					case *dictv1.CreateKeyRequest:
						// B's key, for a company (a trade name is only
						// for legal persons): refused as a conflict.
						r.KeyType, r.Key = dictv1.KeyType_KEY_TYPE_EMAIL, h.keyB.GetKey()
						r.Owner.Type, r.Owner.TaxId = dictv1.OwnerType_OWNER_TYPE_LEGAL_PERSON, newCNPJ(false)
						want = connect.CodeAlreadyExists
					case *dictv1.CreateClaimRequest:
						// A's own key: the caller already holds it.
						r.KeyType, r.Key = dictv1.KeyType_KEY_TYPE_CPF, h.keyA.GetKey()
						r.Claimer.TaxId = h.keyA.GetKey()
						want = connect.CodeFailedPrecondition
					}
				}
				proto := h.protocolsInTurn[n%len(h.protocolsInTurn)]
				n++
				cases = append(cases, hostileCase{
					name: fmt.Sprintf("field/%s.%s %s (%s)", base.procedure, path, p.name, proto),
					want: want,
					run: func(t *testing.T) outcome {
						return typedOutcome(callAny(context.Background(), h.clients[proto](h.tokA), base.procedure, req))
					},
				})
			}
		}
	}
	return cases
}

// --- bodies ------------------------------------------------------------------------

func (h *hostileEnv) bodyCases(t *testing.T) []hostileCase {
	get := dictv1connect.CoreDictServiceGetKeyProcedure
	check := dictv1connect.CoreDictServiceCheckKeysProcedure
	validCreate := must(protojson.Marshal(createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))))
	validCreateProto := must(proto.Marshal(createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))))
	// GetKeyRequest{key: <bytes>} by hand: proto.Marshal refuses invalid UTF-8.
	protoString := func(field protowire.Number, s string) []byte {
		b := protowire.AppendTag(nil, field, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	badUTF8 := "user\xff\xfe@example.com"
	deepGroups := func(n int) []byte {
		var b []byte
		for range n {
			b = protowire.AppendTag(b, 99, protowire.StartGroupType)
		}
		for range n {
			b = protowire.AppendTag(b, 99, protowire.EndGroupType)
		}
		return b
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"key":"`))
	_, _ = zw.Write(bytes.Repeat([]byte("0"), 8<<20))
	_, _ = zw.Write([]byte(`"}`))
	_ = zw.Close()
	json1 := "application/json"
	protoCT := "application/proto"
	grpcCT := "application/grpc"
	webCT := "application/grpc-web+proto"
	inv, re := connect.CodeInvalidArgument, connect.CodeResourceExhausted
	raw := func(r rawRequest) func(t *testing.T) outcome {
		return func(t *testing.T) outcome { return h.do(t, r) }
	}
	return []hostileCase{
		{name: "body/JSON truncated", want: inv, run: raw(rawRequest{contentType: json1, body: validCreate[:len(validCreate)/2]})},
		{name: "body/JSON empty", want: inv, run: raw(rawRequest{contentType: json1})},
		{name: "body/JSON an array", want: inv, run: raw(rawRequest{contentType: json1, body: []byte(`[1,2,3]`)})},
		{name: "body/JSON a string", want: inv, run: raw(rawRequest{contentType: json1, body: []byte(`"key"`)})},
		{name: "body/JSON null", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`null`)})},
		{name: "body/JSON wrong field type", want: inv, run: raw(rawRequest{contentType: json1, body: []byte(`{"requestId":123}`)})},
		{name: "body/JSON keys not a list", want: inv, run: raw(rawRequest{path: check, contentType: json1, body: []byte(`{"keys":"a"}`)})},
		{name: "body/JSON duplicate field", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`{"key":"a","key":"b"}`)})},
		{name: "body/JSON trailing garbage", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`{"key":"a"} {"key":"b"}`)})},
		{name: "body/JSON invalid UTF-8 in a string", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`{"key":"` + badUTF8 + `"}`)})},
		{name: "body/JSON lone surrogate escape", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`{"key":"\ud800@example.com"}`)})},
		{name: "body/JSON NUL escape in a key", want: inv, run: raw(rawRequest{path: get, contentType: json1, body: []byte(`{"key":"a\u0000b@example.com"}`)})},
		{name: "body/JSON nested 100000 deep", want: inv, run: raw(rawRequest{path: get, contentType: json1,
			body: []byte(`{"x":` + strings.Repeat(`{"x":`, 100000) + `1` + strings.Repeat(`}`, 100001))})},
		{name: "body/JSON unknown enum name", want: inv, run: raw(rawRequest{contentType: json1, body: []byte(`{"requestId":"` + uuid.NewString() + `","keyType":"KEY_TYPE_PASSPORT"}`)})},
		{name: "body/JSON over 1 MiB", want: re, status: http.StatusTooManyRequests, run: raw(rawRequest{contentType: json1,
			body: []byte(`{"key":"` + strings.Repeat("x", 2<<20) + `"}`)})},
		{name: "body/JSON gzip bomb", want: re, run: raw(rawRequest{path: get, contentType: json1, body: gz.Bytes(),
			header: map[string]string{"Content-Encoding": "gzip"}})},
		{name: "body/JSON unknown compression", want: connect.CodeUnimplemented, run: raw(rawRequest{path: get, contentType: json1,
			body: []byte(`{"key":"a"}`), header: map[string]string{"Content-Encoding": "br"}})},
		{name: "body/proto truncated", want: inv, run: raw(rawRequest{contentType: protoCT, body: validCreateProto[:len(validCreateProto)-7]})},
		{name: "body/proto garbage", want: inv, run: raw(rawRequest{contentType: protoCT, body: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}})},
		{name: "body/proto wrong wire type", want: inv, run: raw(rawRequest{path: get, contentType: protoCT,
			body: protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7)})},
		{name: "body/proto invalid UTF-8 in a string", want: inv, run: raw(rawRequest{path: get, contentType: protoCT, body: protoString(1, badUTF8)})},
		{name: "body/proto length past the end", want: inv, run: raw(rawRequest{path: get, contentType: protoCT,
			body: append(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), 1000), 'a', 'b')})},
		{name: "body/proto groups nested 20000 deep", want: inv, run: raw(rawRequest{path: get, contentType: protoCT, body: deepGroups(20000)})},
		{name: "body/proto over 1 MiB", want: re, run: raw(rawRequest{path: get, contentType: protoCT, body: protoString(1, strings.Repeat("k", 2<<20))})},
		{name: "body/gRPC invalid UTF-8", want: inv, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true, body: envelope(protoString(1, badUTF8))})},
		// A broken envelope is a protocol error, which gRPC (and Connect
		// after it) answers INTERNAL; the message says what was wrong.
		{name: "body/gRPC truncated frame", want: connect.CodeInternal, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true, body: envelope(protoString(1, "a@b.com"))[:7]})},
		{name: "body/gRPC frame header only", want: connect.CodeInternal, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true, body: []byte{0, 0, 0}})},
		{name: "body/gRPC frame promising 64 MiB", want: re, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true,
			body: []byte{0, 0x04, 0, 0, 0, 'x'}})},
		{name: "body/gRPC frame over 1 MiB", want: re, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true,
			body: envelope(protoString(1, strings.Repeat("k", 2<<20)))})},
		{name: "body/gRPC compressed flag without compression", want: connect.CodeInternal, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true,
			body: append([]byte{1}, envelope(protoString(1, "a@b.com"))[1:]...)})},
		{name: "body/gRPC two messages on a unary call", want: connect.CodeUnimplemented, run: raw(rawRequest{path: get, contentType: grpcCT, h2c: true,
			body: append(envelope(protoString(1, h.keyA.GetKey())), envelope(protoString(1, h.keyA.GetKey()))...)})},
		{name: "body/gRPC-Web garbage", want: inv, run: raw(rawRequest{path: get, contentType: webCT, body: envelope([]byte{0xff, 0xff, 0xff})})},
		{name: "body/gRPC-Web truncated frame", want: connect.CodeInternal, run: raw(rawRequest{path: get, contentType: webCT, body: envelope(protoString(1, "a@b.com"))[:9]})},
		{name: "body/a request after an oversized body, same connection", want: codeOK, run: func(t *testing.T) outcome {
			// One connection: the server must close it (or read the
			// rest) after refusing a body it did not read, never read the
			// rest of that body as the next request.
			tr := &http.Transport{MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			for i, body := range [][]byte{[]byte(`{"key":"` + strings.Repeat("x", 2<<20) + `"}`), []byte(`{"key":"` + h.keyA.GetKey() + `"}`)} {
				req, _ := http.NewRequest(http.MethodPost, h.url+get, bytes.NewReader(body))
				req.Header.Set("Content-Type", json1)
				req.Header.Set("Authorization", "Bearer "+h.tokA)
				res, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if i == 1 {
					if res.StatusCode != http.StatusOK {
						return outcome{code: connect.CodeUnknown, status: res.StatusCode, text: string(b)}
					}
					return outcome{code: codeOK, status: res.StatusCode}
				}
				if res.StatusCode != http.StatusTooManyRequests {
					t.Errorf("oversized body: HTTP %d %s", res.StatusCode, b)
				}
			}
			return outcome{}
		}},
		{name: "body/unknown content type", want: connect.CodeUnknown, status: http.StatusUnsupportedMediaType, run: raw(rawRequest{path: get, contentType: "text/plain",
			body: []byte(`{"key":"a"}`)})},
		{name: "body/GET on a procedure", want: connect.CodeUnknown, status: http.StatusMethodNotAllowed, run: raw(rawRequest{path: get, method: http.MethodGet})},
		{name: "body/unknown procedure", want: connect.CodeUnknown, status: http.StatusNotFound, run: raw(rawRequest{path: "/dict.v1.CoreDictService/DropTables",
			contentType: json1, body: []byte(`{}`)})},
		{name: "body/Connect protocol version wrong", want: inv, run: raw(rawRequest{path: get, contentType: json1,
			body: []byte(`{"key":"a"}`), header: map[string]string{"Connect-Protocol-Version": "99"}})},
		{name: "body/timeout header garbage", want: inv, run: raw(rawRequest{path: get, contentType: json1,
			body: []byte(`{"key":"a"}`), header: map[string]string{"Connect-Timeout-Ms": "-1; DROP"}})},
	}
}

// --- sizes and enums -----------------------------------------------------------------

func (h *hostileEnv) sizeAndEnumCases(t *testing.T) []hostileCase {
	ctx := context.Background()
	tenThousand := make([]string, 10000)
	for i := range tenThousand {
		tenThousand[i] = fmt.Sprintf("user%d@example.com", i)
	}
	manyStatuses := make([]dictv1.ClaimStatus, 10000)
	for i := range manyStatuses {
		manyStatuses[i] = dictv1.ClaimStatus(i%5 + 1)
	}
	inv := connect.CodeInvalidArgument
	call := func(proto string, f func(c dictv1connect.CoreDictServiceClient) error) func(t *testing.T) outcome {
		return func(t *testing.T) outcome { return typedOutcome(f(h.clients[proto](h.tokA))) }
	}
	create := func(edit func(r *dictv1.CreateKeyRequest)) func(c dictv1connect.CoreDictServiceClient) error {
		return func(c dictv1connect.CoreDictServiceClient) error {
			r := createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))
			edit(r)
			_, err := c.CreateKey(ctx, r)
			return err
		}
	}
	return []hostileCase{
		{name: "size/CheckKeys 10,000 keys (JSON)", want: inv, run: call("connect+json", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.CheckKeys(ctx, &dictv1.CheckKeysRequest{Keys: tenThousand})
			return err
		})},
		{name: "size/CheckKeys 10,000 keys (gRPC)", want: inv, run: call("grpc", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.CheckKeys(ctx, &dictv1.CheckKeysRequest{Keys: tenThousand})
			return err
		})},
		{name: "size/CheckKeys 201 keys", want: inv, run: call("connect+proto", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.CheckKeys(ctx, &dictv1.CheckKeysRequest{Keys: tenThousand[:201]})
			return err
		})},
		{name: "size/CheckKeys no keys", want: inv, run: call("connect+json", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.CheckKeys(ctx, &dictv1.CheckKeysRequest{})
			return err
		})},
		{name: "size/ListClaims 10,000 statuses", want: inv, run: call("grpc", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.ListClaims(ctx, &dictv1.ListClaimsRequest{AsClaimer: true, Statuses: manyStatuses})
			return err
		})},
		{name: "size/ListKeys page size -1", want: inv, run: call("connect+json", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.ListKeys(ctx, &dictv1.ListKeysRequest{OwnerTaxId: newCPF(), PageSize: -1})
			return err
		})},
		{name: "size/ListKeys page size 2^31-1", want: inv, run: call("connect+proto", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.ListKeys(ctx, &dictv1.ListKeysRequest{OwnerTaxId: newCPF(), PageSize: 1<<31 - 1})
			return err
		})},
		{name: "enum/CreateKey key type 99 (proto)", want: inv, run: call("connect+proto", create(func(r *dictv1.CreateKeyRequest) { r.KeyType = 99 }))},
		{name: "enum/CreateKey key type 99 (JSON number)", want: inv, run: call("connect+json", create(func(r *dictv1.CreateKeyRequest) { r.KeyType = 99 }))},
		{name: "enum/CreateKey key type -1 (gRPC)", want: inv, run: call("grpc", create(func(r *dictv1.CreateKeyRequest) { r.KeyType = -1 }))},
		{name: "enum/CreateKey account type 42", want: inv, run: call("grpc-web", create(func(r *dictv1.CreateKeyRequest) { r.Account.Type = 42 }))},
		{name: "enum/CreateKey owner type 7", want: inv, run: call("connect+json", create(func(r *dictv1.CreateKeyRequest) { r.Owner.Type = 7 }))},
		{name: "enum/GetKey key type 1000", want: inv, run: call("connect+proto", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.GetKey(ctx, &dictv1.GetKeyRequest{Key: h.keyA.GetKey(), KeyType: 1000})
			return err
		})},
		{name: "enum/DeleteKey reason 1000", want: inv, run: call("grpc", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.DeleteKey(ctx, &dictv1.DeleteKeyRequest{RequestId: uuid.NewString(), Key: h.keyA.GetKey(), Reason: 1000})
			return err
		})},
		{name: "enum/UpdateKey reason 77", want: inv, run: call("connect+json", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.UpdateKey(ctx, &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: h.keyA.GetKey(), Account: h.keyA.GetAccount(),
				Owner: &dictv1.Owner{Name: hostileName}, Reason: 77})
			return err
		})},
		{name: "enum/CreateClaim type 9", want: inv, run: call("connect+proto", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.CreateClaim(ctx, &dictv1.CreateClaimRequest{RequestId: uuid.NewString(), Type: 9, KeyType: dictv1.KeyType_KEY_TYPE_PHONE,
				Key: newPhone(), ClaimerAccount: account(partA), Claimer: naturalOwner(newCPF())})
			return err
		})},
		{name: "enum/CreateKey account type 2^31-1 (JSON number)", want: inv, run: call("connect+json", create(func(r *dictv1.CreateKeyRequest) { r.Account.Type = 1<<31 - 1 }))},
		{name: "enum/ListClaims status 77", want: inv, run: call("grpc-web", func(c dictv1connect.CoreDictServiceClient) error {
			_, err := c.ListClaims(ctx, &dictv1.ListClaimsRequest{AsClaimer: true, Statuses: []dictv1.ClaimStatus{77}})
			return err
		})},
	}
}

// --- panics, logs and limits -------------------------------------------------------

// panicky panics in every RPC it sees, with a value holding a CPF (which the
// log must not show raw).
type panicky struct{ value string }

func (p panicky) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Header().Get("X-Test-Panic") != "" {
			panic("boom for " + p.value)
		}
		return next(ctx, req)
	}
}

func (panicky) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (panicky) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// miniServer serves NewMux over svc (nil: every handler that reaches the
// service panics) with logs into buf.
func miniServer(t *testing.T, svc *dictServiceRef, buf *syncBuffer, reg *prometheus.Registry, interceptors ...connect.Interceptor) string {
	t.Helper()
	return miniServerWith(t, svc, buf, reg, func(cfg *rpc.ServerConfig) { cfg.Interceptors = interceptors })
}

// miniServerWith is miniServer with its configuration changed by edit.
func miniServerWith(t *testing.T, svc *dictServiceRef, buf *syncBuffer, reg *prometheus.Registry, edit func(*rpc.ServerConfig)) string {
	t.Helper()
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: apiSecret, Participants: []string{partA, partB}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rpc.ServerConfig{Auth: auth, Metrics: rpc.NewMetrics(reg), Logger: slog.New(slog.NewJSONHandler(buf, nil))}
	if svc != nil {
		cfg.Service = svc.svc
	}
	edit(&cfg)
	s := httptest.NewUnstartedServer(rpc.NewMux(cfg))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s.URL
}

type dictServiceRef struct{ svc *dict.Service }

// TestPanicRecovery: a panic in an interceptor, in a handler or in the
// health check answers INTERNAL "internal error", in each protocol, logs
// the panic with its stack (the CPF in the panic value masked) and counts
// it; the server goes on serving.
func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	cpf := newCPF()
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	url := miniServer(t, nil, &logs, reg, panicky{value: "key " + cpf})
	before := rpc.RecoveredPanics()
	withHeader := func(rt http.RoundTripper, tok string) *http.Client {
		return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Set("X-Test-Panic", "1")
			return rt.RoundTrip(r)
		})}
	}
	tok := token(t, partA)
	clients := map[string]dictv1connect.CoreDictServiceClient{
		"interceptor, Connect JSON": dictv1connect.NewCoreDictServiceClient(withHeader(http1Transport, tok), url, connect.WithProtoJSON()),
		"interceptor, gRPC":         dictv1connect.NewCoreDictServiceClient(withHeader(h2cTransport, tok), url, connect.WithGRPC()),
		"interceptor, gRPC-Web":     dictv1connect.NewCoreDictServiceClient(withHeader(http1Transport, tok), url, connect.WithGRPCWeb()),
		// No X-Test-Panic: the handler reaches the nil service and panics.
		"handler, Connect proto": dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, http1Transport}}, url),
		"handler, gRPC":          dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, h2cTransport}}, url, connect.WithGRPC()),
	}
	for name, c := range clients {
		_, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: cpf})
		if connect.CodeOf(err) != connect.CodeInternal {
			t.Errorf("%s: %v, want internal", name, err)
			continue
		}
		var ce *connect.Error
		if errors.As(err, &ce) && ce.Message() != "internal error" {
			t.Errorf("%s: message %q, want %q", name, ce.Message(), "internal error")
		}
	}
	// The health check over the nil service.
	req, _ := http.NewRequest(http.MethodPost, url+"/grpc.health.v1.Health/Check", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http1Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusInternalServerError || !bytes.Contains(body, []byte(`"internal"`)) || internalDetail.Match(body) {
		t.Errorf("health over a panicking service: %d %s", res.StatusCode, body)
	}
	want := int64(len(clients) + 1)
	if got := rpc.RecoveredPanics() - before; got < want {
		t.Errorf("RecoveredPanics grew by %d, want at least %d", got, want)
	}
	if got := metricSumOf(t, reg, "rpc_server_panics_total"); got != float64(want) {
		t.Errorf("rpc_server_panics_total = %v, want %d", got, want)
	}
	out := logs.String()
	for _, s := range []string{`"msg":"panic recovered"`, `"stack":"goroutine`, "hostile_ext_test.go", "boom for key "} {
		if !strings.Contains(out, s) {
			t.Errorf("the panic log lacks %q:\n%.3000s", s, out)
		}
	}
	if strings.Contains(out, cpf) {
		t.Errorf("the log holds the raw CPF %s", cpf)
	}
	// The interceptor panic is still one logged, counted RPC (code internal).
	if !strings.Contains(out, `"msg":"rpc"`) || !strings.Contains(out, `"code":"internal"`) {
		t.Errorf("no request log with code internal:\n%.2000s", out)
	}
	// And the server still serves.
	_, err = dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: http1Transport}, url).GetKey(context.Background(), &dictv1.GetKeyRequest{Key: cpf})
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("after the panics: %v, want unauthenticated", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func metricSumOf(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestEdgeRateLimits: the per-IP and per-account limiters (redis_rate's
// GCRA in Redis) refuse with RESOURCE_EXHAUSTED, reason RateLimited and a
// RetryInfo, per account, and per IP across accounts. The IP limit comes
// before authentication: every request from the address counts, and once
// it is spent a request with a forged token is refused unverified
// (RESOURCE_EXHAUSTED, not UNAUTHENTICATED). The rates are per hour so that
// no refill can happen during the test.
func TestEdgeRateLimits(t *testing.T) {
	t.Parallel()
	rc := cachelayer.DefaultConfig()
	rc.URL = redisTestURL()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	redis, err := cachelayer.NewClient(ctx, rc, cachelayer.WithRegisterer(prometheus.NewRegistry()))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(redis.Close)
	rdb := cachelayer.NewRueidisScripter(redis)
	prefix := "hostile-limits-" + uuid.NewString()
	ip, err := cachelayer.NewIPRateLimiter(rdb, cachelayer.RateLimit{Rate: 4, Burst: 4, Period: time.Hour},
		cachelayer.WithLimitKeyPrefix("limit:ip:"+prefix), cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := cachelayer.NewAccountRateLimiter(rdb, cachelayer.RateLimit{Rate: 1, Burst: 1, Period: time.Hour},
		cachelayer.WithLimitKeyPrefix("limit:acc:"+prefix), cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	url := miniServerWith(t, &dictServiceRef{env.stack.svc}, &logs, prometheus.NewRegistry(), func(cfg *rpc.ServerConfig) {
		cfg.IPLimiter, cfg.AccountLimiter = ip, acc
	})
	withToken := func(tok string) dictv1connect.CoreDictServiceClient {
		return dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok, http1Transport}}, url, connect.WithProtoJSON())
	}
	as := func(sub, ispb string) dictv1connect.CoreDictServiceClient {
		tok, err := rpc.IssueToken(apiSecret, sub, ispb, []string{rpc.ScopeRead}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return withToken(tok)
	}
	status := func(c dictv1connect.CoreDictServiceClient) error {
		_, err := c.GetSyncStatus(context.Background(), &dictv1.GetSyncStatusRequest{})
		return err
	}
	limited := func(what string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("%s: %v, want resource_exhausted", what, err)
		}
		if reason := errorReason(err); reason != dict.ReasonRateLimited {
			t.Errorf("%s: reason %q, want %q", what, reason, dict.ReasonRateLimited)
		}
		if d := retryDelay(err); d <= 0 {
			t.Errorf("%s: no RetryInfo delay", what)
		}
		if m := internalDetail.FindString(err.Error()); m != "" {
			t.Errorf("%s: leaks %q: %v", what, m, err)
		}
	}
	forgedTok, err := rpc.IssueToken([]byte("not-the-service-secret-0123456789abcdef"), "mallory", partA, []string{rpc.ScopeRead}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged := withToken(forgedTok)
	a1, a2, b1 := as("alice", partA), as("bob", partA), as("carol", partB)
	if err := status(a1); err != nil { // the address's 1st request
		t.Fatalf("first request: %v", err)
	}
	limited("alice's second request (account)", status(a1)) // 2nd
	if err := status(a2); err != nil {                      // 3rd
		t.Fatalf("bob, same IP, other account: %v", err)
	}
	// A forged token, while the address has requests left, is verified
	// and refused as such.
	if code := connect.CodeOf(status(forged)); code != connect.CodeUnauthenticated { // 4th
		t.Fatalf("forged token within the IP's allowance: %v, want unauthenticated", code)
	}
	// The address has spent its 4: the same forged token is now refused
	// before authentication, and so is a good one of another account.
	limited("a forged token beyond the IP's allowance", status(forged))
	limited("carol, a new account from the same IP", status(b1))
}
