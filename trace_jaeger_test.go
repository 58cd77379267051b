package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// mainArgsEnv makes the test binary run main with these (space-separated) arguments instead of the
// tests: the Jaeger test starts the service and the simulator as real processes, each with its own
// OTEL_SERVICE_NAME, from the binary under test (built with -race when the tests are).
const mainArgsEnv = "CORE_DICT_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(mainArgsEnv); args != "" {
		os.Args = append(os.Args[:1], strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// jaegerQuery is the query API of the Jaeger scripts/deps.sh starts (JAEGER_QUERY_URL overrides it);
// jaegerOTLP its OTLP/HTTP receiver (OTEL_EXPORTER_OTLP_ENDPOINT of the processes; JAEGER_OTLP_URL).
func jaegerQuery() string { return envOr("JAEGER_QUERY_URL", "http://127.0.0.1:16686") }
func jaegerOTLP() string  { return envOr("JAEGER_OTLP_URL", "http://127.0.0.1:4318") }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestTracesInJaeger runs core-dict and the simulated DICT as processes exporting to Jaeger, makes one
// CreateKey and one LookupKey of another participant's key, and finds each call in Jaeger as a single
// trace holding the RPC's server span and spans of PostgreSQL, Redis, the Pulsar publish and the consume;
// the lookup's trace also runs through the simulator (its consume, its queries, its reply) and back (the
// reply's consume). No span attribute holds the key or a tax id.
func TestTracesInJaeger(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := jaegerGet(ctx, "/api/services"); err != nil {
		t.Fatalf("Jaeger's query API at %s does not answer (start it with `scripts/deps.sh up jaeger`): %v", jaegerQuery(), err)
	}

	// Cleanups run in reverse: the processes stop before their databases are dropped.
	db, err := testdb.Create(ctx, "maintrace")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	simDB, err := testdb.CreateMigrated(ctx, "maintracesim", dictsim.Migrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(simDB.Close)

	var b [4]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	service, simService := "core-dict-trace-"+id, "dictsim-trace-"+id
	const ispbA, ispbB = "12345678", "87654321"
	const secret = "trace-test-secret-0123456789abcdef0123"
	apiPort, metricsPort, simPort := freePort(t), freePort(t), freePort(t)
	ns := "persistent://lb-conn/dict/trace-" + id
	common := []string{
		"PULSAR_TOPIC_DICT_REQ_OUT=" + ns + "-req",
		"PULSAR_TOPIC_DICT_RES_IN=" + ns + "-res",
		"PULSAR_TOPIC_KEY_EVENTS=persistent://dict/events/trace-" + id + "-keys",
		"PULSAR_TOPIC_CLAIM_EVENTS=persistent://dict/events/trace-" + id + "-claims",
		"LISTEN_HOST=127.0.0.1",
		"LOG_LEVEL=info",
		"OTEL_SDK_DISABLED=",
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + jaegerOTLP(),
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=",
		"OTEL_TRACES_SAMPLER=parentbased_always_on",
		"OTEL_BSP_SCHEDULE_DELAY=200",
	}
	startMain(t, "dictsim -migrate=false", "simulated DICT consuming", append(common,
		"OTEL_SERVICE_NAME="+simService,
		"DICTSIM_DATABASE_URL="+simDB.URL,
		"DICTSIM_SUBSCRIPTION=dictsim-"+id,
		"DICTSIM_METRICS_PORT="+strconv.Itoa(simPort),
		"DICTSIM_PARTICIPANT_CATEGORY=A",
	))
	startMain(t, "serve", `"msg":"serving"`, append(common,
		"OTEL_SERVICE_NAME="+service,
		"DATABASE_URL="+db.AppURL, // the service's role, which row-level security applies to
		"MIGRATE_DATABASE_URL="+db.URL,
		"DICT_PARTICIPANTS="+ispbA+","+ispbB,
		"DICT_PARTICIPANT_CATEGORY=A",
		"DICT_INSTANCE_ID=trace-"+id,
		"DICT_DIRECTORY_TIMEOUT=30s", // a loaded CI machine; this test is about spans, not latency
		"PULSAR_CONSUMER_SUBSCRIPTION=core-dict-trace-"+id,
		"JWT_SECRET="+secret,
		"GRPC_PORT="+strconv.Itoa(apiPort),
		"METRICS_PORT="+strconv.Itoa(metricsPort),
	))

	// "serving" is logged as the listeners start: wait until both answer.
	awaitHTTP(ctx, t, "http://127.0.0.1:"+strconv.Itoa(metricsPort)+"/readyz")
	base := "http://127.0.0.1:" + strconv.Itoa(apiPort)
	awaitHTTP(ctx, t, base+"/grpc.health.v1.Health/Check")
	clientFor := func(ispb string) dictv1connect.CoreDictServiceClient {
		tok, err := rpc.IssueToken([]byte(secret), "trace-test", ispb, []string{"dict.read", "dict.write", "dict.lookup"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: bearer{tok: tok}, Timeout: 30 * time.Second}
		return dictv1connect.NewCoreDictServiceClient(hc, base, connect.WithProtoJSON())
	}
	a, bClient := clientFor(ispbA), clientFor(ispbB)

	// B creates an email key; the directory (the simulator) makes it ACTIVE.
	key := "trace-" + id + "@example.com.br"
	ownerCPF, payerCPF := cpfFrom(id, 1), cpfFrom(id, 2)
	res, err := bClient.CreateKey(ctx, &dictv1.CreateKeyRequest{
		RequestId: uuid.NewString(), KeyType: dictv1.KeyType_KEY_TYPE_EMAIL, Key: key,
		Account: &dictv1.Account{Participant: ispbB, Branch: "0001", Number: accountFrom(id),
			Type: dictv1.AccountType_ACCOUNT_TYPE_CACC, OpenedAt: timestamppb.New(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))},
		Owner: &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: ownerCPF, Name: "Maria da Silva"},
	})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	key = res.GetEntry().GetKey()
	for {
		got, err := bClient.GetKey(ctx, &dictv1.GetKeyRequest{Key: key})
		if err == nil && got.GetEntry().GetStatus() == dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the key never became ACTIVE (last: %v, %v): is the simulator consuming?", got.GetEntry().GetStatus(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A looks B's key up: not A's own, so through the directory.
	e2e := "E" + ispbA + time.Now().UTC().Format("200601021504") + strings.ToUpper(id) + "abc"
	lk, err := a.LookupKey(ctx, &dictv1.LookupKeyRequest{Key: key, PayerId: payerCPF, EndToEndId: e2e})
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	if lk.GetPayerView().GetKey() != key {
		t.Fatalf("LookupKey answered %v, want the key %s", lk.GetPayerView(), key)
	}

	secrets := []string{key, ownerCPF, payerCPF}
	// CreateKey: the RPC, its queries and rate limit (Redis), the relay's publish of the DirectoryRequest,
	// the simulator's consume, its reply's publish and the service's consume of the response.
	create := awaitTrace(ctx, t, service, "dict.v1.CoreDictService/CreateKey", []spanWant{
		{"RPC server span", service, func(s jSpan) bool { return s.tag("span.kind") == "server" && s.tag("rpc.method") == "CreateKey" }},
		{"PostgreSQL query", service, isDB("postgresql")},
		{"Redis command", service, isDB("redis")},
		{"Pulsar publish (outbox relay)", service, isMessaging("producer")},
		{"Pulsar consume (simulator)", simService, isMessaging("consumer")},
		{"PostgreSQL query (simulator)", simService, isDB("postgresql")},
		{"Pulsar publish (simulator's response)", simService, isMessaging("producer")},
		{"Pulsar consume (response)", service, isMessaging("consumer")},
	})
	// LookupKey: the RPC, the anti-scan bucket (Redis), the request's publish, the simulator's consume and
	// queries and its reply's publish, and the reply's consume back in the service.
	lookup := awaitTrace(ctx, t, service, "dict.v1.CoreDictService/LookupKey", []spanWant{
		{"RPC server span", service, func(s jSpan) bool { return s.tag("span.kind") == "server" && s.tag("rpc.method") == "LookupKey" }},
		{"PostgreSQL query", service, isDB("postgresql")},
		{"Redis command", service, isDB("redis")},
		{"Pulsar publish (directory request)", service, isMessaging("producer")},
		{"Pulsar consume (simulator)", simService, isMessaging("consumer")},
		{"PostgreSQL query (simulator)", simService, isDB("postgresql")},
		{"Pulsar publish (simulator's reply)", simService, isMessaging("producer")},
		{"Pulsar consume (reply)", service, isMessaging("consumer")},
	})
	for _, tr := range []jTrace{create, lookup} {
		for _, s := range tr.Spans {
			for _, kv := range append(append([]jTag(nil), s.Tags...), s.logTags()...) {
				v := fmt.Sprint(kv.Value)
				for _, secret := range secrets {
					if strings.Contains(v, secret) {
						t.Errorf("span %q: attribute %s holds a key or tax id in the clear: %q", s.OperationName, kv.Key, v)
					}
				}
			}
		}
	}
}

// spanWant is a span a trace must hold: one of service's spans matching match.
type spanWant struct {
	what    string
	service string
	match   func(jSpan) bool
}

func isDB(system string) func(jSpan) bool {
	return func(s jSpan) bool { return s.tag("db.system") == system }
}

func isMessaging(kind string) func(jSpan) bool {
	return func(s jSpan) bool { return s.tag("messaging.system") == "pulsar" && s.tag("span.kind") == kind }
}

// awaitTrace polls Jaeger until service has exactly one trace of operation and that trace holds every
// wanted span (the spans arrive in batches from two processes), and returns it; at ctx's end it fails
// with what is missing.
func awaitTrace(ctx context.Context, t *testing.T, service, operation string, wants []spanWant) jTrace {
	t.Helper()
	q := url.Values{"service": {service}, "operation": {operation}, "lookback": {"1h"}, "limit": {"20"}}
	var problem string
	for {
		body, err := jaegerGet(ctx, "/api/traces?"+q.Encode())
		var res struct {
			Data []jTrace `json:"data"`
		}
		switch {
		case err != nil:
			problem = err.Error()
		case json.Unmarshal(body, &res) != nil:
			problem = "undecodable answer: " + string(body)
		case len(res.Data) == 0:
			problem = "no trace yet"
		case len(res.Data) > 1:
			t.Fatalf("%s: %d traces, want one (the call's spans are not in one trace)", operation, len(res.Data))
		default:
			tr := res.Data[0]
			var missing []string
			for _, w := range wants {
				found := false
				for _, s := range tr.Spans {
					if tr.Processes[s.ProcessID].ServiceName == w.service && w.match(s) {
						found = true
						break
					}
				}
				if !found {
					missing = append(missing, w.what+" ("+w.service+")")
				}
			}
			if len(missing) == 0 {
				return tr
			}
			problem = fmt.Sprintf("trace %s (%d spans: %s) lacks %s", tr.TraceID, len(tr.Spans), tr.summary(), strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s in Jaeger: %s", operation, problem)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Jaeger's query API (v1 JSON) answer, what the test reads of it.
type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
}

type jSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	Tags          []jTag `json:"tags"`
	Logs          []struct {
		Fields []jTag `json:"fields"`
	} `json:"logs"`
}

type jTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

func (s jSpan) tag(key string) string {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return fmt.Sprint(kv.Value)
		}
	}
	return ""
}

func (s jSpan) logTags() []jTag {
	var out []jTag
	for _, l := range s.Logs {
		out = append(out, l.Fields...)
	}
	return out
}

func (tr jTrace) summary() string {
	var parts []string
	for _, s := range tr.Spans {
		parts = append(parts, tr.Processes[s.ProcessID].ServiceName+":"+s.OperationName)
	}
	return strings.Join(parts, ", ")
}

func jaegerGet(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jaegerQuery()+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// proc is core-dict (or its simulator) running as a child process.
type proc struct {
	args    string
	cmd     *exec.Cmd
	stopped bool
	done    chan error
	mu      sync.Mutex
	out     strings.Builder
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startMain starts the test binary as `core-dict args` with env added to the test's environment, and
// waits until its output holds ready.
func startMain(t *testing.T, args, ready string, env []string) *proc {
	t.Helper()
	p := &proc{args: args, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(append(os.Environ(), mainArgsEnv+"="+args), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("core-dict %s output:\n%s", args, p.output())
		}
	})
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			p.Write([]byte(line + "\n"))
			if !seen && strings.Contains(line, ready) {
				seen = true
				close(up)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.done <- p.cmd.Wait()
	}()
	select {
	case <-up:
		return p
	case err := <-p.done:
		p.done <- err
		t.Fatalf("core-dict %s exited before it was ready: %v", args, err)
	case <-time.After(90 * time.Second):
		t.Fatalf("core-dict %s not ready after 90s", args)
	}
	return p
}

// stop sends SIGTERM and waits for the process to exit (it flushes its spans on the way out).
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.Process == nil || p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("core-dict %s exited with %v", p.args, err)
		}
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("core-dict %s did not stop within 60s of SIGTERM", p.args)
		p.done <- <-p.done
	}
}

// awaitHTTP waits until url answers (any status but a 5xx for a POST-only route; 200 for a GET one).
func awaitHTTP(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never answered: %v", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// accountFrom derives a 10-digit account number from the test's random id.
func accountFrom(id string) string {
	v, _ := strconv.ParseUint(id, 16, 64)
	return fmt.Sprintf("%010d", v%10_000_000_000)
}

// cpfFrom derives a valid CPF from the test's random id.
func cpfFrom(id string, n int) string {
	v, _ := strconv.ParseUint(id, 16, 64)
	base := fmt.Sprintf("%09d", (v*7+uint64(n)*104729)%900000000+100000000)
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

// bearer adds the token to every request.
type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}
