package web_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/dictcache"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	"github.com/lbpay-lab/core-dict/web"
)

// The browser test runs the console as a user would: two core-dict stacks
// (participants A and B, wired as main wires them: own database, outbox
// relay, directory link, anti-scanning buckets on Redis) serving the
// embedded console at /, dictsim in-process as the central directory, all
// over the real PostgreSQL, Redis and Pulsar; Debian's Chromium (headless,
// driven by playwright-core from web/e2e/console.mjs) signs in to each.

const (
	ispbA = "11110000"
	ispbB = "22220000"
)

var apiSecret = []byte("console-test-secret-0123456789abcdef")

func testLogger() *slog.Logger {
	if os.Getenv("CONSOLE_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func randDigits(n int) string {
	var sb strings.Builder
	for range n {
		d, _ := rand.Int(rand.Reader, big.NewInt(10))
		sb.WriteByte(byte('0' + d.Int64()))
	}
	return sb.String()
}

// newCPF returns a random valid CPF.
func newCPF() string {
	for {
		d := randDigits(9)
		for _, n := range []int{9, 10} {
			sum := 0
			for i := range n {
				sum += int(d[i]-'0') * (n + 1 - i)
			}
			d += string(rune('0' + (sum*10)%11%10))
		}
		if dict.ValidCPF(d) {
			return d
		}
	}
}

type world struct {
	bus   *eventbus.Client
	redis *cachelayer.Client
	ns    string
}

// newWorld starts dictsim on topics of the test's own.
func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{ns: "persistent://lb-conn/dict/console-test-" + randDigits(10)}
	simDB, err := testdb.CreateMigrated(ctx, "consolesim", dictsim.Migrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(simDB.Close)
	pc := eventbus.DefaultConfig()
	pc.URL = envOr("PULSAR_URL", "pulsar://127.0.0.1:6650")
	sim, err := dictsim.New(ctx, dictsim.Config{
		Pool: simDB.Pool, Pulsar: pc, RequestTopic: w.ns + "-req", Subscription: "dictsim",
		NoticeTopics: map[string]string{ispbA: w.ns + "-res-" + ispbA, ispbB: w.ns + "-res-" + ispbB},
		Logger:       testLogger(), Registerer: prometheus.NewRegistry(),
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
	w.bus, err = eventbus.NewClient(pc, eventbus.WithRegisterer(prometheus.NewRegistry()), eventbus.WithLogger(testLogger()))
	if err != nil {
		t.Fatalf("Pulsar client (start it with `scripts/deps.sh up pulsar`): %v", err)
	}
	t.Cleanup(w.bus.Close)
	rc := cachelayer.DefaultConfig()
	rc.URL = envOr("REDIS_URL", "redis://127.0.0.1:6379/0")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	w.redis, err = cachelayer.NewClient(cctx, rc, cachelayer.WithRegisterer(prometheus.NewRegistry()), cachelayer.WithLogger(testLogger()))
	cancel()
	if err != nil {
		t.Fatalf("Redis (start it with `scripts/deps.sh up`): %v", err)
	}
	t.Cleanup(w.redis.Close)
	return w
}

// newPSP starts participant ispb's core-dict and returns its URL and a
// token with every scope the console uses.
func (w *world) newPSP(t *testing.T, ispb, reqTopic string) (string, string) {
	t.Helper()
	ctx := context.Background()
	db, err := testdb.Create(ctx, "console_"+ispb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	logger := testLogger()
	resTopic := w.ns + "-res-" + ispb
	link, err := dictbus.New(w.bus, db.App, dictbus.Config{
		RequestTopic: reqTopic, ResponseTopic: resTopic, ReplyTopic: dictbus.ReplyTopic(resTopic, "i1"),
		Timeout:      30 * time.Second, // a loaded CI machine; the browser test is about screens, not latency
		Subscription: "core-dict", Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	prefix := "console-" + strings.TrimPrefix(w.ns, "persistent://lb-conn/dict/console-test-") + ":" + ispb + ":"
	tbk, err := cachelayer.NewTokenBucket(w.redis, cachelayer.WithLimitKeyPrefix("limit:tb:"+prefix),
		cachelayer.WithLimitRegisterer(prometheus.NewRegistry()), cachelayer.WithLimitLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	antiScan, _ := dict.NewAntiScan(dictcache.Buckets{TB: tbk}, "A")
	svc := dict.NewService(dict.ServiceConfig{
		Pool: db.App, Participants: []string{ispb}, Logger: logger, Directory: link.Directory(),
		ParticipantNames:      map[string]string{ispbA: "Banco A", ispbB: "Banco B"},
		KeyEventsTopic:        "persistent://dict/events/console-test-keys-" + db.Name,
		ClaimEventsTopic:      "persistent://dict/events/console-test-claims-" + db.Name,
		DirectoryRequestTopic: reqTopic, DirectoryReplyTo: resTopic, ResponseOnce: link.ResponseOnce(),
		DirectoryCache: cachelayer.NewCacheAside[dict.Entry](w.redis, "dict:directory:"+prefix),
		Lookups:        cachelayer.NewOneShot(w.redis, "dict:lookup:"+prefix, time.Hour),
		AntiScan:       antiScan,
	})
	link.Start(svc)
	// The relay runs as in production: the service's role, acting for the
	// participant this instance serves.
	relayPool, err := db.AppPoolFor(ctx, ispb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relayPool.Close)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- eventbus.NewRelay(relayPool, w.bus.Pulsar(), eventbus.WithRelayPollInterval(20*time.Millisecond),
			eventbus.WithRelayOwner("console-test-"+db.Name), eventbus.WithRelayLogger(logger)).Run(relayCtx)
	}()
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: apiSecret, Participants: []string{ispb}, Audience: rpc.DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rpc.NewMux(rpc.ServerConfig{Service: svc, Auth: auth,
		Metrics: rpc.NewMetrics(prometheus.NewRegistry()), Logger: logger, Console: web.Handler()}))
	t.Cleanup(func() {
		srv.Close()
		stopRelay()
		<-relayDone
		link.Stop()
	})
	tok, err := rpc.IssueToken(apiSecret, "console-"+ispb, ispb, []string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeLookup, rpc.ScopeClaims}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL, tok
}

// TestConsoleInBrowser runs web/e2e/console.mjs against two participants:
// A signs in, is told why an invalid CNPJ is refused, creates a CPF key and
// sees it in its list, looks it up, and, as the donor, acknowledges and
// confirms B's portability claim over it, which B then completes; every
// screen is shot at 360 px and 1440 px (web/e2e/screenshots/). The script
// fails on a console error, a failed request, a request that is not
// gRPC-Web, or a page wider than the viewport.
func TestConsoleInBrowser(t *testing.T) {
	if !web.Built() {
		t.Fatal("the console is not built into this binary: run `make web` (scripts/web.sh build), then the test again")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; the browser test runs web/e2e/console.mjs with it")
	}
	chromium := envOr("CHROMIUM", "/usr/bin/chromium")
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s: %v (install it with `scripts/web.sh chromium`)", chromium, err)
	}
	if _, err := os.Stat("node_modules/playwright-core"); err != nil {
		t.Fatal("web/node_modules/playwright-core is missing: run `make web` (npm ci)")
	}
	w := newWorld(t)
	// The relay names its producers by topic and lane, so two databases
	// cannot relay to the same topic name: B names it in Pulsar's short form.
	urlA, tokA := w.newPSP(t, ispbA, w.ns+"-req")
	urlB, tokB := w.newPSP(t, ispbB, strings.TrimPrefix(w.ns+"-req", "persistent://"))

	shots, err := filepath.Abs(filepath.Join("e2e", "screenshots"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(shots); err != nil {
		t.Fatal(err)
	}
	// The script gets what is left of the test's time, less a margin for
	// the cleanup, so that running out fails with the script's output.
	limit := 9 * time.Minute
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "console.mjs"))
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL_A="+urlA, "CONSOLE_TOKEN_A="+tokA, "CONSOLE_ISPB_A="+ispbA,
		"CONSOLE_URL_B="+urlB, "CONSOLE_TOKEN_B="+tokB, "CONSOLE_ISPB_B="+ispbB,
		"CONSOLE_CPF="+newCPF(), "CONSOLE_PAYER_CPF="+newCPF(),
		"CONSOLE_SCREENSHOTS="+shots, "CHROMIUM="+chromium,
	)
	// Node and the Chromium it starts form a process group of their own,
	// so that running out of time stops the browser too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("web/e2e/console.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("browser test failed: %v", err)
	}
	for _, name := range []string{"signin", "key-invalid-cnpj", "keys", "lookup", "claims", "claim-detail", "claim-completed", "sync"} {
		for _, width := range []string{"360", "1440"} {
			if _, err := os.Stat(filepath.Join(shots, name+"-"+width+".png")); err != nil {
				t.Errorf("screenshot %s at %s px: %v", name, width, err)
			}
		}
	}
}

// TestConsoleServingAndCORS checks the console is served at / next to the
// RPC paths, and that only the configured origins get CORS answers.
func TestConsoleServingAndCORS(t *testing.T) {
	ctx := context.Background()
	db, err := testdb.Create(ctx, "console_cors")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: apiSecret, Participants: []string{ispbA}, Audience: rpc.DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	svc := dict.NewService(dict.ServiceConfig{Pool: db.App, Participants: []string{ispbA}})
	mux := func(origins ...string) *httptest.Server {
		srv := httptest.NewServer(rpc.NewMux(rpc.ServerConfig{Service: svc, Auth: auth, Metrics: rpc.NewMetrics(prometheus.NewRegistry()),
			Logger: testLogger(), Console: web.Handler(), CORSAllowedOrigins: origins}))
		t.Cleanup(srv.Close)
		return srv
	}
	const allowed = "https://console.example.com.br"
	with, without := mux(allowed), mux()

	do := func(srv *httptest.Server, method, path string, hdr map[string]string, body ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(strings.Join(body, "")))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}

	// The console: its page at / and at its own routes, 404 for a missing
	// file and for anything but GET or HEAD (an unknown procedure stays
	// unknown).
	for _, test := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/", http.StatusOK},
		{"GET", "/keys", http.StatusOK},
		{"HEAD", "/", http.StatusOK},
		{"GET", "/missing.js", http.StatusNotFound},
		{"POST", "/dict.v1.Nope/Call", http.StatusNotFound},
	} {
		res := do(without, test.method, test.path, nil)
		if res.StatusCode != test.want {
			t.Errorf("%s %s = %d, want %d", test.method, test.path, res.StatusCode, test.want)
		}
		if test.want == http.StatusOK && !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s %s: Content-Type %q, want text/html", test.method, test.path, res.Header.Get("Content-Type"))
		}
	}
	if res := do(without, "GET", "/", nil); web.Built() && res.Header.Get("Content-Security-Policy") == "" {
		t.Error("GET / has no Content-Security-Policy")
	}

	preflight := func(origin string) map[string]string {
		return map[string]string{
			"Origin":                        origin,
			"Access-Control-Request-Method": "POST",
			// As browsers send it: lowercase, sorted.
			"Access-Control-Request-Headers": "authorization,content-type,x-grpc-web,x-user-agent",
		}
	}
	const path = "/dict.v1.CoreDictService/ListKeys"
	res := do(with, "OPTIONS", path, preflight(allowed))
	if res.StatusCode/100 != 2 || res.Header.Get("Access-Control-Allow-Origin") != allowed {
		t.Fatalf("preflight from %s: %d, Allow-Origin %q; want 2xx and the origin", allowed, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	if got := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "x-grpc-web") || !strings.Contains(got, "authorization") {
		t.Errorf("preflight Allow-Headers %q lacks x-grpc-web or authorization", got)
	}
	// A gRPC-Web call's answer exposes the trailers' headers to the page.
	res = do(with, "POST", path, map[string]string{"Origin": allowed, "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"},
		"\x00\x00\x00\x00\x00") // one empty message
	if res.Header.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Expose-Headers")), "grpc-status") {
		t.Errorf("gRPC-Web call from %s: Allow-Origin %q, Expose-Headers %q", allowed, res.Header.Get("Access-Control-Allow-Origin"), res.Header.Get("Access-Control-Expose-Headers"))
	}
	if got := res.Header.Get("Grpc-Status"); got != "16" {
		t.Errorf("gRPC-Web call without a token: grpc-status %q, want 16 (unauthenticated)", got)
	}
	for name, srv := range map[string]*httptest.Server{"another origin": with, "no origins configured": without} {
		res := do(srv, "OPTIONS", path, preflight("https://evil.example"))
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("%s: preflight answered Allow-Origin %q", name, got)
		}
	}
}
