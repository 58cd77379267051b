// Command core-dict is a PSP's PIX key service. Subcommands:
//
//	core-dict serve     serve the API (default)
//	core-dict migrate   apply the database migrations
//	core-dict token     print a signed token for local use
//
// All settings come from the environment (see README.md); a bad value stops
// start-up with one line naming the variable and what it expects.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/dbmetrics"
	"github.com/lbpay-lab/core-dict/internal/dictbus"
	"github.com/lbpay-lab/core-dict/internal/dictcache"
	"github.com/lbpay-lab/core-dict/internal/logmask"
	"github.com/lbpay-lab/core-dict/internal/telemetry"
	"github.com/lbpay-lab/core-dict/rpc"
	"github.com/lbpay-lab/core-dict/schema"
	"github.com/lbpay-lab/core-dict/web"
)

func main() {
	cmd := "serve"
	args := os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(args)
	case "migrate":
		err = runMigrate(args)
	case "token":
		err = runToken(args)
	case "dictsim":
		err = runDictsim(args)
	default:
		err = fmt.Errorf("unknown command %q: want serve, migrate, token or dictsim", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "core-dict:", err)
		os.Exit(1)
	}
}

// config is every setting, parsed once from the environment.
type config struct {
	DatabaseURL      string
	DBMaxConns       int
	ListenHost       string
	GRPCPort         int
	MetricsPort      int
	JWTSecret        string
	JWTJWKSFile      string
	Participants     []string
	ParticipantNames map[string]string
	MaxRequestBytes  int
	ReadTimeout      time.Duration
	WriteTimeout     time.Duration
	IdleTimeout      time.Duration
	ShutdownTimeout  time.Duration
	KeyEventsTopic   string
	LogLevel         slog.Level

	Pulsar              eventbus.Config
	Redis               cachelayer.Config
	ParticipantCategory string
	LookupFlushInterval time.Duration
	PaymentCreditWindow time.Duration
	RateLimitIP         int
	RateLimitAccount    int
	DirectoryTimeout    time.Duration
	DirectoryResend     time.Duration
	InstanceID          string

	// ClaimEventsTopic is PULSAR_TOPIC_CLAIM_EVENTS; ClaimSchedulerInterval
	// how often the claim deadlines are enforced (CLAIM_SCHEDULER_INTERVAL).
	ClaimEventsTopic       string
	ClaimSchedulerInterval time.Duration
	// OutboxRetention is how long published outbox rows are kept before
	// the relay deletes them (OUTBOX_RETENTION); OutboxLinger how long after
	// the start of a round that was not full a relay lane takes the next
	// one (OUTBOX_LINGER).
	OutboxRetention time.Duration
	OutboxLinger    time.Duration
	// SyncCheckInterval is how often each key type's VSync is checked
	// against the directory (SYNC_CHECK_INTERVAL, at most 36h per BCB).
	SyncCheckInterval time.Duration
	// CORSAllowedOrigins are the other origins whose pages may call the API
	// from a browser (CORS_ALLOWED_ORIGINS); none by default.
	CORSAllowedOrigins []string

	// MigrateDatabaseURL is the tables' owner, which runs the migrations
	// (MIGRATE_DATABASE_URL); DatabaseURL is the service's role, which
	// row-level security applies to (schema/00010_rls.sql).
	MigrateDatabaseURL string
}

// env reads the environment into a config; the first bad value is an error
// naming the variable.
type env struct{ err error }

func (e *env) str(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func (e *env) int(name string, def, min, max int) int {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if (err != nil || n < min || n > max) && e.err == nil {
		e.err = fmt.Errorf("%s=%q: want an integer from %d to %d", name, v, min, max)
	}
	return n
}

func (e *env) dur(name string, def time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if (err != nil || d <= 0) && e.err == nil {
		e.err = fmt.Errorf("%s=%q: want a positive duration such as 5s or 250ms", name, v)
	}
	return d
}

func (e *env) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf(format, args...)
	}
}

func loadConfig() (config, error) {
	var e env
	c := config{
		DatabaseURL:     e.str("DATABASE_URL", "postgres://coredict_app:coredict_app@127.0.0.1:5432/coredict?sslmode=disable"),
		DBMaxConns:      e.int("DB_MAX_CONNS", 20, 1, 1000),
		ListenHost:      e.str("LISTEN_HOST", ""),
		GRPCPort:        e.int("GRPC_PORT", 9090, 1, 65535),
		MetricsPort:     e.int("METRICS_PORT", 9091, 1, 65535),
		JWTSecret:       e.str("JWT_SECRET", ""),
		JWTJWKSFile:     e.str("JWT_JWKS_FILE", ""),
		MaxRequestBytes: e.int("MAX_REQUEST_BYTES", rpc.DefaultMaxRequestBytes, 1024, 64<<20),
		ReadTimeout:     e.dur("HTTP_READ_TIMEOUT", 10*time.Second),
		WriteTimeout:    e.dur("HTTP_WRITE_TIMEOUT", 30*time.Second),
		IdleTimeout:     e.dur("HTTP_IDLE_TIMEOUT", 120*time.Second),
		ShutdownTimeout: e.dur("SHUTDOWN_TIMEOUT", 25*time.Second),
	}
	c.MigrateDatabaseURL = e.str("MIGRATE_DATABASE_URL", "postgres://coredict:coredict@127.0.0.1:5432/coredict?sslmode=disable")
	c.ParticipantCategory = strings.ToUpper(e.str("DICT_PARTICIPANT_CATEGORY", "H"))
	if _, ok := dict.ParticipantBuckets[c.ParticipantCategory]; !ok {
		e.fail("DICT_PARTICIPANT_CATEGORY=%q: want the participant's DICT category, A to H", c.ParticipantCategory)
	}
	c.LookupFlushInterval = e.dur("LOOKUP_STATS_FLUSH_INTERVAL", 5*time.Second)
	c.PaymentCreditWindow = e.dur("PAYMENT_CREDIT_WINDOW", time.Hour)
	c.RateLimitIP = e.int("RATE_LIMIT_IP_RPS", 1000, 1, 1_000_000)
	c.RateLimitAccount = e.int("RATE_LIMIT_ACCOUNT_RPS", 500, 1, 1_000_000)
	c.DirectoryTimeout = e.dur("DICT_DIRECTORY_TIMEOUT", dictbus.DefaultTimeout)
	c.DirectoryResend = e.dur("DICT_DIRECTORY_RESEND_AFTER", dictbus.DefaultResendAfter)
	c.ClaimSchedulerInterval = e.dur("CLAIM_SCHEDULER_INTERVAL", dict.DefaultClaimSchedulerInterval)
	c.SyncCheckInterval = e.dur("SYNC_CHECK_INTERVAL", dict.DefaultSyncCheckInterval)
	c.OutboxRetention = e.dur("OUTBOX_RETENTION", eventbus.DefaultOutboxRetention)
	c.OutboxLinger = eventbus.DefaultOutboxLinger
	if v := e.str("OUTBOX_LINGER", ""); v == "0" {
		c.OutboxLinger = 0
	} else if v != "" {
		c.OutboxLinger = e.dur("OUTBOX_LINGER", eventbus.DefaultOutboxLinger)
		if c.OutboxLinger > time.Second {
			e.fail("OUTBOX_LINGER=%s: want 0 or a duration of at most 1s (every event may wait that long)", v)
		}
	}
	if c.SyncCheckInterval > dict.MaxSyncCheckInterval {
		e.fail("SYNC_CHECK_INTERVAL=%s: BCB requires a VSync check at least every %s", c.SyncCheckInterval, dict.MaxSyncCheckInterval)
	}
	c.InstanceID = e.str("DICT_INSTANCE_ID", defaultInstanceID())
	if strings.ContainsAny(c.InstanceID, "/ \t\n") {
		e.fail("DICT_INSTANCE_ID=%q: want a name without slashes or spaces (it names this instance's reply topic)", c.InstanceID)
	}
	if pc, err := eventbus.ConfigFromEnv(os.Getenv); err != nil {
		e.fail("%v", err)
	} else {
		c.Pulsar = pc
		c.KeyEventsTopic = pc.TopicKeyEvents
		c.ClaimEventsTopic = pc.TopicClaimEvents
	}
	if rc, err := cachelayer.ConfigFromEnv(os.Getenv); err != nil {
		e.fail("%v", err)
	} else {
		c.Redis = rc
	}
	for _, p := range strings.Split(e.str("DICT_PARTICIPANTS", ""), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if len(p) != 8 || strings.Trim(p, "0123456789") != "" {
			e.fail("DICT_PARTICIPANTS: %q is not an ISPB; want comma-separated 8-digit ISPBs", p)
		}
		c.Participants = append(c.Participants, p)
	}
	c.ParticipantNames = map[string]string{}
	if v := e.str("DICT_PARTICIPANT_NAMES", ""); v != "" {
		for _, kv := range strings.Split(v, ",") {
			ispb, name, ok := strings.Cut(kv, "=")
			if !ok || len(strings.TrimSpace(ispb)) != 8 {
				e.fail("DICT_PARTICIPANT_NAMES: want ISPB=Name pairs separated by commas")
				break
			}
			c.ParticipantNames[strings.TrimSpace(ispb)] = strings.TrimSpace(name)
		}
	}
	for _, o := range strings.Split(e.str("CORS_ALLOWED_ORIGINS", ""), ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if u, err := url.Parse(o); o != "*" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil) {
			e.fail("CORS_ALLOWED_ORIGINS: %q is not an origin; want comma-separated scheme://host[:port] (or *)", o)
		}
		c.CORSAllowedOrigins = append(c.CORSAllowedOrigins, o)
	}
	switch strings.ToLower(e.str("LOG_LEVEL", "info")) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		e.fail("LOG_LEVEL: want debug, info, warn or error")
	}
	return c, e.err
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	migrate := fs.Bool("migrate", false, "apply migrations before serving")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if len(cfg.Participants) == 0 {
		return errors.New("DICT_PARTICIPANTS: required; the comma-separated ISPBs this instance serves")
	}
	if cfg.JWTSecret == "" && cfg.JWTJWKSFile == "" {
		return errors.New("JWT_SECRET: required (at least 32 bytes) unless JWT_JWKS_FILE is set")
	}
	// Keys and tax ids are masked in every log line (internal/logmask).
	logger := slog.New(logmask.NewHandler(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel})))
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Traces from the standard OTEL_* variables (README.md); flushed last, after everything stopped.
	shutdownTracing, err := setupTracing(ctx, "core-dict", logger)
	if err != nil {
		return err
	}
	defer shutdownTracing()

	if *migrate {
		if err := applyMigrations(ctx, cfg.MigrateDatabaseURL); err != nil {
			return err
		}
	}
	pool, err := openPool(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer pool.Close()

	auth, err := rpc.NewAuthenticator(rpc.AuthConfig{
		HS256Secret:  []byte(cfg.JWTSecret),
		JWKSFile:     cfg.JWTJWKSFile,
		Participants: cfg.Participants,
		Audience:     rpc.DefaultAudience,
		Leeway:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("JWT_SECRET/JWT_JWKS_FILE: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The pgx pool's statistics, claims by status and the VSync results (README.md, "Metrics").
	reg.MustRegister(dbmetrics.New(dbmetrics.Config{Pool: pool, Participants: cfg.Participants, Logger: logger}))
	// pulsar-client-go's own metrics break Prometheus' naming rules: served apart, on /metrics/pulsar-client.
	pulsarLibReg := prometheus.NewRegistry()

	cctx, ccancel := context.WithTimeout(ctx, cfg.Redis.DialTimeout)
	redis, err := cachelayer.NewClient(cctx, cfg.Redis, cachelayer.WithRegisterer(reg), cachelayer.WithLogger(logger))
	ccancel()
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	defer redis.Close()
	buckets, err := cachelayer.NewTokenBucket(redis, cachelayer.WithLimitName("dict_antiscan"),
		cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitLogger(logger))
	if err != nil {
		return err
	}
	antiScan, _ := dict.NewAntiScan(dictcache.Buckets{TB: buckets}, cfg.ParticipantCategory)
	ipLimiter, accountLimiter, err := newRequestLimiters(cfg, redis, reg, logger)
	if err != nil {
		return err
	}
	// Pulsar: the outbox relay publishes what the use cases' transactions
	// committed (key events, and the DirectoryRequests of writes); the link
	// applies the directory's responses and carries the reads that wait for
	// their reply. Pulsar being down only grows the backlog: the relay
	// retries and writes go on (PENDING).
	bus, err := eventbus.NewClient(cfg.Pulsar, eventbus.WithLogger(logger), eventbus.WithRegisterer(reg),
		eventbus.WithLibraryRegisterer(pulsarLibReg))
	if err != nil {
		return fmt.Errorf("PULSAR_URL: %w", err)
	}
	defer bus.Close()
	link, err := dictbus.New(bus, pool, dictbus.Config{
		RequestTopic:  cfg.Pulsar.TopicDictReqOut,
		ResponseTopic: cfg.Pulsar.TopicDictResIn,
		ReplyTopic:    dictbus.ReplyTopic(cfg.Pulsar.TopicDictResIn, cfg.InstanceID),
		Subscription:  cfg.Pulsar.Subscription,
		Timeout:       cfg.DirectoryTimeout,
		ResendAfter:   cfg.DirectoryResend,
		Registerer:    reg,
		Logger:        logger,
	})
	if err != nil {
		return fmt.Errorf("PULSAR_TOPIC_DICT_RES_IN/DICT_INSTANCE_ID: %w", err)
	}
	var svc *dict.Service
	lookupCounts := cachelayer.NewWriteBehindCounter(redis, "lookups",
		func(ctx context.Context, batch string, counts map[string]int64) error {
			return svc.ApplyLookupCounts(ctx, batch, counts)
		},
		cachelayer.WithFlushInterval(cfg.LookupFlushInterval),
		cachelayer.WithWriteBehindRegisterer(reg), cachelayer.WithWriteBehindLogger(logger))
	svc = dict.NewService(dict.ServiceConfig{
		Pool:             pool,
		Participants:     cfg.Participants,
		KeyEventsTopic:   cfg.KeyEventsTopic,
		ClaimEventsTopic: cfg.ClaimEventsTopic,
		ParticipantNames: cfg.ParticipantNames,
		Logger:           logger,
		Cache:            dictcache.NewEntryCache(redis, cfg.Redis.EntryTTL),
		AntiScan:         antiScan,
		LookupCounter:    lookupCounts,
		Lookups:          cachelayer.NewOneShot(redis, "dict:lookup:", cfg.PaymentCreditWindow),
		DirectoryCache:   cachelayer.NewCacheAside[dict.Entry](redis, "dict:directory:"),
		TraceParent:      rpc.TraceParent,
		Directory:        link.Directory(),

		DirectoryRequestTopic: cfg.Pulsar.TopicDictReqOut,
		DirectoryReplyTo:      cfg.Pulsar.TopicDictResIn,
		ResponseOnce:          link.ResponseOnce(),
	})
	// The relay publishes the outbox rows of every participant this
	// instance serves: its own pool declares them for the whole session
	// (schema/00010_rls.sql), the API's pool never does.
	relayPool, err := openPool(ctx, cfg, cfg.Participants)
	if err != nil {
		return err
	}
	defer relayPool.Close()
	lookupCounts.Start()
	link.Start(svc)
	// The claim deadlines, on every instance: due claims are taken with
	// FOR UPDATE SKIP LOCKED, each by one instance.
	schedCtx, stopScheduler := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		svc.RunClaimDeadlines(schedCtx, cfg.ClaimSchedulerInterval)
	}()
	// VSync checks and reconciliation, on every instance: each due check
	// is taken by one (sync_schedule).
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		svc.RunSyncChecks(schedCtx, cfg.Participants, cfg.SyncCheckInterval)
	}()

	logger.Info("outbox relay acts for the configured participants", "participants", cfg.Participants)
	relay := eventbus.NewRelay(relayPool, bus.Pulsar(), eventbus.WithRelayRegistry(reg), eventbus.WithRelayLogger(logger),
		eventbus.WithRelayRetention(cfg.OutboxRetention), eventbus.WithRelayLinger(cfg.OutboxLinger),
		eventbus.WithRelayMetrics(bus.Metrics()))
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() {
		err := relay.Run(relayCtx)
		if err != nil && relayCtx.Err() == nil {
			logger.Error("outbox relay did not start; events stay in the outbox until a relay runs", "err", err)
		}
		relayDone <- err
	}()
	mux := rpc.NewMux(rpc.ServerConfig{
		Service:         svc,
		Auth:            auth,
		Metrics:         rpc.NewMetrics(reg),
		Logger:          logger,
		MaxRequestBytes: cfg.MaxRequestBytes,
		IPLimiter:       ipLimiter,
		AccountLimiter:  accountLimiter,
		// The browser console at / (web/; `make web` builds it).
		Console:            web.Handler(),
		CORSAllowedOrigins: cfg.CORSAllowedOrigins,
	})
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	api := &http.Server{
		Addr:              net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.GRPCPort)),
		Handler:           mux,
		Protocols:         protocols,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	ops := &http.Server{
		Addr:              net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.MetricsPort)),
		Handler:           opsMuxWith(opsMux(reg, svc), pulsarLibReg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	errc := make(chan error, 2)
	for _, s := range []*http.Server{api, ops} {
		go func() {
			if err := s.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("listen on %s: %w", s.Addr, err)
			}
		}()
	}
	logger.Info("serving", "api", api.Addr, "metrics", ops.Addr, "participants", cfg.Participants)

	select {
	case <-ctx.Done():
	case err = <-errc:
		logger.Error("server failed", "err", err)
	}
	// SIGTERM: stop accepting, drain in-flight requests, then close the pool.
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	serr := api.Shutdown(sctx)
	stopScheduler()
	<-schedDone
	<-syncDone
	// Requests have drained: stop the relay (it flushes its producers and
	// releases its lanes; what it did not publish, the next relay will),
	// then the directory link (responses being applied finish; the rest are
	// redelivered to another instance), then flush the lookup counts still
	// pending.
	stopRelay()
	if rerr := <-relayDone; rerr != nil {
		logger.Error("outbox relay stopped with an error", "err", rerr)
	}
	link.Stop()
	if ferr := lookupCounts.Close(sctx); ferr != nil {
		logger.Error("lookup counts not flushed; they stay in Redis for the next instance", "err", ferr)
	}
	_ = ops.Shutdown(sctx)
	if err == nil {
		err = serr
	}
	logger.Info("stopped")
	return err
}

// opsMuxWith adds pulsar-client-go's metrics to mux, on /metrics/pulsar-client.
func opsMuxWith(mux *http.ServeMux, pulsarLib *prometheus.Registry) *http.ServeMux {
	mux.Handle("GET /metrics/pulsar-client", promhttp.HandlerFor(pulsarLib, promhttp.HandlerOpts{}))
	return mux
}

// opsMux serves the operator's endpoints: metrics, liveness, readiness.
func opsMux(reg *prometheus.Registry, svc *dict.Service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := svc.Ping(ctx); err != nil {
			http.Error(w, "postgres unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// openPool connects to DATABASE_URL, whose role must be one row-level
// security applies to. A pool for sessionParticipants declares that
// participant set for its whole sessions (the outbox relay's); without,
// each transaction declares its own (dict's store).
func openPool(ctx context.Context, cfg config, sessionParticipants []string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, errors.New("DATABASE_URL: not a valid PostgreSQL URL")
	}
	if len(sessionParticipants) > 0 {
		pc.ConnConfig.RuntimeParams["app.participants"] = strings.Join(sessionParticipants, ",")
	}
	pc.MaxConns = int32(cfg.DBMaxConns)
	pc.ConnConfig.Tracer = telemetry.NewPGXTracer(nil) // a span per query inside a trace
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("DATABASE_URL: PostgreSQL does not answer (run `scripts/deps.sh up postgres`): %w", err)
	}
	if err := checkServiceRole(pctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// checkServiceRole refuses a role that row-level security does not apply
// to (a superuser, one with BYPASSRLS, or the tables' owner): the service
// would see every participant's rows. It also needs the migrations that
// turn row-level security on.
func checkServiceRole(ctx context.Context, pool *pgxpool.Pool) error {
	var user string
	var super, bypass, owner, rls bool
	err := pool.QueryRow(ctx, `SELECT current_user, r.rolsuper, r.rolbypassrls, pg_has_role(current_user, c.relowner, 'USAGE'), c.relrowsecurity
		FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = to_regclass('public.entries')`).Scan(&user, &super, &bypass, &owner, &rls)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errors.New("DATABASE_URL: the database has no entries table; run `core-dict migrate` (as MIGRATE_DATABASE_URL)")
	case err != nil:
		return fmt.Errorf("DATABASE_URL: %w", err)
	case super || bypass || owner:
		return fmt.Errorf("DATABASE_URL: role %q bypasses row-level security (superuser %v, BYPASSRLS %v, owns the tables %v); "+
			"connect as the service's role (coredict_app) and migrate with MIGRATE_DATABASE_URL", user, super, bypass, owner)
	case !rls:
		return errors.New("DATABASE_URL: row-level security is off on the entries table; run `core-dict migrate` (as MIGRATE_DATABASE_URL)")
	}
	return nil
}

func runMigrate(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	return applyMigrations(context.Background(), cfg.MigrateDatabaseURL)
}

func applyMigrations(ctx context.Context, url string) error {
	if err := schema.Migrate(ctx, url, os.Stderr); err != nil {
		return fmt.Errorf("MIGRATE_DATABASE_URL: %w", err)
	}
	return nil
}

func runToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "local-user", "subject: the calling user or service")
	ispb := fs.String("ispb", "", "the participant (8-digit ISPB) the caller acts for")
	scope := fs.String("scope", "dict.read dict.write dict.lookup dict.claims", "space-separated scopes")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv("JWT_SECRET")
	if secret == "" {
		return errors.New("JWT_SECRET: required to sign a token")
	}
	tok, err := rpc.IssueToken([]byte(secret), *sub, *ispb, strings.Fields(*scope), *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

// newRequestLimiters builds the per-IP and per-account GCRA limiters
// (redis_rate's algorithm and scripts, run over the shared rueidis client:
// one client, pipelined, reconnecting, about 1.5x the throughput of a
// go-redis pool here). The server runs the IP one before authentication
// and the account one after it.
func newRequestLimiters(cfg config, redis *cachelayer.Client, reg prometheus.Registerer, logger *slog.Logger) (ip, account rpc.KeyLimiter, err error) {
	rdb := cachelayer.NewRueidisScripter(redis)
	ip, err = cachelayer.NewIPRateLimiter(rdb, cachelayer.RatePerSecond(cfg.RateLimitIP),
		cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitLogger(logger))
	if err != nil {
		return nil, nil, err
	}
	account, err = cachelayer.NewAccountRateLimiter(rdb, cachelayer.RatePerSecond(cfg.RateLimitAccount),
		cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitLogger(logger))
	if err != nil {
		return nil, nil, err
	}
	return ip, account, nil
}

// defaultInstanceID names this process for its reply topic: the host name
// and a random suffix, so two processes never share one.
func defaultInstanceID() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "core-dict"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strings.ReplaceAll(h, "/", "-") + "-" + hex.EncodeToString(b[:])
}
