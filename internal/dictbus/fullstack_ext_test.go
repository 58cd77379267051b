package dictbus_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/dictcache"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// The full stacks below are wired as main wires core-dict: besides what
// newPSP wires, each has the anti-scanning buckets (cachelayer's Redis token
// bucket, category A), the directory cache (cache-aside on Redis), the
// lookup ledger and, optionally, the request limiters and the entry cache.
// Every Redis key of a world carries a prefix of its own, since the tests
// share one Redis (in production each PSP has its own).

const ispbC = "33330000"

// fullOpts tunes a full world.
type fullOpts struct {
	// now is the clock of the services, the simulator and the anti-scanning
	// buckets; nil makes a test clock (w.clock) that only the test moves.
	now func() time.Time
	// noAntiScan lists stacks (by ISPB) built without core-dict's own
	// anti-scanning policy, so that only the simulated DICT's buckets apply.
	noAntiScan map[string]bool
	// limiters puts the per-IP and per-account request limiters (at this
	// rate per second) in front of the handlers, as main does; 0: none.
	limiters int
	// entryCache gives stack A the Redis entry cache of its own entries.
	entryCache bool
	// simWorkers is the simulator's concurrency (default 4).
	simWorkers int
	// withC adds a third stack, C, that only looks keys up.
	withC bool
	// relayPoll is the outbox relay's poll interval (default 20 ms, so
	// that a lost notification costs a test little; production's is 1 s).
	relayPoll time.Duration
	// category is core-dict's participant category for its anti-scanning
	// buckets (default A).
	category string
}

type fullWorld struct {
	*world
	c        *pspStack
	now      func() time.Time
	sim      *dictsim.Sim
	simReg   *prometheus.Registry
	bus      *eventbus.Client
	redis    *cachelayer.Client
	prefix   string
	reqTopic string
	vsyncReq *eventbus.Requester
}

func redisURL() string {
	if v := os.Getenv("REDIS_URL"); v != "" {
		return v
	}
	return "redis://127.0.0.1:6379/0"
}

// newFullWorld starts the simulator and full stacks A, B (and C) on topics
// and Redis keys of their own.
func newFullWorld(tb testing.TB, o fullOpts) *fullWorld {
	tb.Helper()
	ctx := context.Background()
	w := &fullWorld{world: &world{clock: &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}}}
	w.now = o.now
	if w.now == nil {
		w.now = w.clock.Now
	}
	id := randDigits(10)
	w.prefix = "e2e-" + id + ":"
	ns := "persistent://lb-conn/dict/e2e-test-" + id
	w.reqTopic = ns + "-req"
	resTopic := func(ispb string) string { return ns + "-res-" + ispb }

	simDB, err := testdb.CreateMigrated(ctx, "e2esim", dictsim.Migrate)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(simDB.Close)
	pc := eventbus.DefaultConfig()
	pc.URL = pulsarURL()
	w.simReg = prometheus.NewRegistry()
	sim, err := dictsim.New(ctx, dictsim.Config{
		Pool: simDB.Pool, Pulsar: pc, RequestTopic: w.reqTopic, Subscription: "dictsim", Workers: o.simWorkers,
		NoticeTopics: map[string]string{ispbA: resTopic(ispbA), ispbB: resTopic(ispbB)},
		Now:          w.now, Logger: testLogger(), Registerer: w.simReg,
	})
	if err != nil {
		tb.Fatalf("dictsim.New (is Pulsar up? `scripts/deps.sh up pulsar`): %v", err)
	}
	w.sim = sim
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(simCtx) }()
	tb.Cleanup(func() {
		stopSim()
		if err := <-simDone; err != nil {
			tb.Errorf("dictsim Run: %v", err)
		}
		sim.Close()
	})

	w.bus, err = eventbus.NewClient(pc, eventbus.WithRegisterer(prometheus.NewRegistry()), eventbus.WithLogger(testLogger()))
	if err != nil {
		tb.Fatalf("Pulsar client (start it with `scripts/deps.sh up pulsar`): %v", err)
	}
	tb.Cleanup(w.bus.Close)
	rc := cachelayer.DefaultConfig()
	rc.URL = redisURL()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	w.redis, err = cachelayer.NewClient(cctx, rc, cachelayer.WithRegisterer(prometheus.NewRegistry()), cachelayer.WithLogger(testLogger()))
	cancel()
	if err != nil {
		tb.Fatalf("Redis (start it with `scripts/deps.sh up`): %v", err)
	}
	tb.Cleanup(w.redis.Close)

	// The relay names its producers by topic and lane, so two databases
	// cannot relay to the same topic name: B names it in Pulsar's short form.
	// C never writes.
	w.a = w.newFullPSP(tb, o, ispbA, w.reqTopic, resTopic(ispbA))
	w.b = w.newFullPSP(tb, o, ispbB, strings.TrimPrefix(w.reqTopic, "persistent://"), resTopic(ispbB))
	if o.withC {
		w.c = w.newFullPSP(tb, o, ispbC, w.reqTopic, resTopic(ispbC))
	}

	// A requester of the test's own, to ask the simulated DICT what a
	// participant asks it for reconciliation (get_vsync).
	w.vsyncReq, err = w.bus.NewRequester(w.reqTopic, ns+"-vsync-reply", func(payload []byte, _ map[string]string) (string, error) {
		var resp dictv1.DirectoryResponse
		if err := proto.Unmarshal(payload, &resp); err != nil {
			return "", err
		}
		return resp.GetCorrelationId(), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	rctx, stopReq := context.WithCancel(ctx)
	reqDone := make(chan struct{})
	go func() { defer close(reqDone); _ = w.vsyncReq.Run(rctx) }()
	tb.Cleanup(func() { stopReq(); <-reqDone; w.vsyncReq.Close() })
	return w
}

func (w *fullWorld) newFullPSP(tb testing.TB, o fullOpts, ispb, reqTopic, resTopic string) *pspStack {
	tb.Helper()
	ctx := context.Background()
	db, err := testdb.Create(ctx, "e2e_"+ispb)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	logger := testLogger()
	link, err := dictbus.New(w.bus, db.App, dictbus.Config{
		RequestTopic: reqTopic, ResponseTopic: resTopic,
		ReplyTopic:   dictbus.ReplyTopic(resTopic, "i1"),
		Subscription: "core-dict", Logger: logger,
		// Longer than production's 5 s: on a loaded 2-core machine (make
		// test runs packages side by side with Chromium and Pulsar) a reply
		// can take seconds, and these tests are about the answers.
		Timeout: 30 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	prefix := w.prefix + ispb + ":"
	cfg := dict.ServiceConfig{
		Pool: db.App, Participants: []string{ispb}, Logger: logger, Now: w.now, Directory: link.Directory(),
		ParticipantNames:      map[string]string{ispbA: "Banco A", ispbB: "Banco B", ispbC: "Banco C"},
		KeyEventsTopic:        "persistent://dict/events/e2e-test-keys-" + db.Name,
		ClaimEventsTopic:      "persistent://dict/events/e2e-test-claims-" + db.Name,
		DirectoryRequestTopic: reqTopic, DirectoryReplyTo: resTopic, ResponseOnce: link.ResponseOnce(),
		DirectoryCache: cachelayer.NewCacheAside[dict.Entry](w.redis, "dict:directory:"+prefix),
		Lookups:        cachelayer.NewOneShot(w.redis, "dict:lookup:"+prefix, time.Hour),
	}
	if !o.noAntiScan[ispb] {
		tbk, err := cachelayer.NewTokenBucket(w.redis, cachelayer.WithLimitKeyPrefix("limit:tb:"+prefix),
			cachelayer.WithLimitClock(w.now), cachelayer.WithLimitRegisterer(prometheus.NewRegistry()),
			cachelayer.WithLimitLogger(logger))
		if err != nil {
			tb.Fatal(err)
		}
		cfg.AntiScan, _ = dict.NewAntiScan(dictcache.Buckets{TB: tbk}, cmp.Or(o.category, "A"))
	}
	if o.entryCache && ispb == ispbA {
		// dictcache's entry cache has a fixed key prefix: only one stack of
		// a world may use it.
		cfg.Cache = dictcache.NewEntryCache(w.redis, time.Minute)
	}
	svc := dict.NewService(cfg)
	link.Start(svc)
	// The relay runs as in production: the service's role, acting for the
	// participant this instance serves.
	relayPool, err := db.AppPoolFor(ctx, ispb)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(relayPool.Close)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- eventbus.NewRelay(relayPool, w.bus.Pulsar(), eventbus.WithRelayPollInterval(cmp.Or(o.relayPoll, 20*time.Millisecond)),
			eventbus.WithRelayOwner("e2e-test-"+db.Name), eventbus.WithRelayLogger(logger)).Run(relayCtx)
	}()
	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{HS256Secret: apiSecret, Participants: []string{ispb}, Audience: rpc.DefaultAudience})
	if err != nil {
		tb.Fatal(err)
	}
	scfg := rpc.ServerConfig{Service: svc, Auth: auth, Metrics: rpc.NewMetrics(prometheus.NewRegistry()), Logger: logger}
	if o.limiters > 0 {
		scfg.IPLimiter, scfg.AccountLimiter = requestLimiters(tb, w.redis, prefix, o.limiters)
	}
	srv := httptest.NewUnstartedServer(rpc.NewMux(scfg))
	srv.Start()
	tb.Cleanup(func() {
		srv.Close()
		stopRelay()
		<-relayDone
		link.Stop()
	})
	tok, err := rpc.IssueToken(apiSecret, "tester", ispb, []string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeClaims, rpc.ScopeLookup}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return &pspStack{ispb: ispb, db: db, svc: svc, srv: srv, client: clientWith(srv, tok), reqTopic: reqTopic, resTopic: resTopic}
}

// requestLimiters are main's per-IP and per-account limiters, at rps each.
func requestLimiters(tb testing.TB, redis *cachelayer.Client, prefix string, rps int) (ip, account rpc.KeyLimiter) {
	tb.Helper()
	rdb := cachelayer.NewRueidisScripter(redis)
	ip, err := cachelayer.NewIPRateLimiter(rdb, cachelayer.RatePerSecond(rps), cachelayer.WithLimitKeyPrefix("limit:ip:"+prefix),
		cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		tb.Fatal(err)
	}
	account, err = cachelayer.NewAccountRateLimiter(rdb, cachelayer.RatePerSecond(rps), cachelayer.WithLimitKeyPrefix("limit:acc:"+prefix),
		cachelayer.WithLimitRegisterer(prometheus.NewRegistry()))
	if err != nil {
		tb.Fatal(err)
	}
	return ip, account
}

// dirVSync asks the simulated DICT for participant's VSync of a key type,
// as the participant's reconciliation would.
func (w *fullWorld) dirVSync(tb testing.TB, participant string, kt dictv1.KeyType) *dictv1.DirVSync {
	tb.Helper()
	corr := uuid.NewString()
	req := &dictv1.DirectoryRequest{CorrelationId: corr, Participant: participant, ReplyTo: w.vsyncReq.ReplyTo(),
		Operation: &dictv1.DirectoryRequest_GetVsync{GetVsync: &dictv1.DirGetVSync{KeyType: kt}}}
	b, err := proto.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	payload, err := w.vsyncReq.Request(ctx, corr, eventbus.Message{Key: participant + kt.String(), Payload: b, EventID: corr,
		EventType: dictbus.EventDirectoryRequest, Properties: map[string]string{"content_type": dict.DirectoryContentType}})
	if err != nil {
		tb.Fatalf("get_vsync %s %s: %v", participant, kt, err)
	}
	var resp dictv1.DirectoryResponse
	if err := proto.Unmarshal(payload, &resp); err != nil {
		tb.Fatal(err)
	}
	if resp.GetError() != nil || resp.GetVsync() == nil {
		tb.Fatalf("get_vsync %s %s answered %v", participant, kt, resp.GetError())
	}
	return resp.GetVsync()
}

// simCount is how many requests of an operation the simulator handled with
// a result ("ok", a DICT reason).
func (w *fullWorld) simCount(tb testing.TB, op, result string) int {
	tb.Helper()
	mfs, err := w.simReg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dictsim_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "operation") == op && label(m, "result") == result {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

var e2eSeq atomic.Int64

// endToEndID is a fresh end-to-end id of a payment by ispb.
func endToEndID(ispb string) string {
	return fmt.Sprintf("E%s202606011200%011d", ispb, e2eSeq.Add(1)%1e11)
}

// newCNPJ returns a random valid numeric CNPJ.
func newCNPJ() string {
	for {
		d := randDigits(12)
		for _, ws := range [][]int{{5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}, {6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2}} {
			sum := 0
			for i, w := range ws {
				sum += int(d[i]-'0') * w
			}
			r := sum % 11
			if r < 2 {
				d += "0"
			} else {
				d += string(rune('0' + 11 - r))
			}
		}
		if dict.ValidCNPJ(d) {
			return d
		}
	}
}

func company(cnpj, name string) *dictv1.Owner {
	return &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_LEGAL_PERSON, TaxId: cnpj, Name: name, TradeName: name + " Ltda"}
}

// lookup looks key up at p for payerID.
func (p *pspStack) lookup(key, payerID string) (*dictv1.LookupKeyResponse, error) {
	return p.client.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: key, PayerId: payerID, EndToEndId: endToEndID(p.ispb)})
}
