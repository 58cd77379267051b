package cachelayer

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/trace"
)

// ErrUnavailable means the [Client] has no working connection to Redis right now: it was unreachable at
// start, or an operation failed and the client has not yet seen Redis answer again. Callers fall back to
// the store; the client keeps trying in the background and recovers by itself.
var ErrUnavailable = errors.New("cachelayer: Redis is unavailable")

// clientErrSlow is the cause of the deadlines the client puts on its own operations (see clientOpCtx):
// when one expires, Redis failed to answer in time, and that is a failure, not the caller giving up.
var clientErrSlow = errors.New("cachelayer: Redis did not answer within the timeout")

// clientOpCtx bounds an operation the client runs on its own account (an invalidation after the store
// committed, a fill) by d.
func clientOpCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, clientErrSlow)
}

// Option configures a [Client].
type Option func(*clientSettings)

type clientSettings struct {
	reg    prometheus.Registerer
	logger *slog.Logger
	tp     trace.TracerProvider // see WithTracerProvider (tracing.go)
}

// WithRegisterer registers the client's metrics (see metrics.go) on reg.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(s *clientSettings) { s.reg = reg }
}

// WithLogger sets the logger of availability changes (slog.Default otherwise).
func WithLogger(l *slog.Logger) Option {
	return func(s *clientSettings) { s.logger = l }
}

// Client is core-dict's Redis client: one rueidis client with client-side caching on (RESP3 CLIENT
// TRACKING in its default, OPTIN mode: the server remembers which keys each connection read through
// DoCache and pushes an invalidation when one changes), plus what the cache strategies need around it:
//
//   - availability: when Redis is unreachable at start or an operation fails, the client reports
//     [ErrUnavailable] so callers fall back at once instead of waiting on a dead connection, and an owned
//     goroutine retries (bounded exponential backoff) until Redis answers again;
//   - write marks: the keys this client wrote whose old value may still sit in its own client-side cache,
//     so that it never serves that old value (see [ReadThrough]);
//   - dirty keys: keys whose cache entry could not be replaced or invalidated after the store changed;
//     nothing trusts the cache for them until an invalidation reaches Redis.
//
// The limiters and other callers use [Client.Rueidis] for plain commands. Close releases everything.
type Client struct {
	cfg     Config
	opt     rueidis.ClientOption
	logger  *slog.Logger
	metrics *metricsSet
	tp      trace.TracerProvider // nil: otel's global provider

	rc    atomic.Pointer[clientConn]
	up    atomic.Bool
	kick  chan struct{} // an operation failed: probe now
	stop  chan struct{}
	done  chan struct{}
	first chan struct{} // closed after the first connection attempt

	closeOnce sync.Once

	localTTL atomic.Int64 // the longest client-side TTL a strategy uses, in ns (bounds write marks)
	marks    clientMarks
	dirty    clientDirty
}

type clientConn struct{ rueidis.Client }

// Backoff of the reconnect loop, and how often expired write marks are swept.
const (
	clientBackoffMin = 50 * time.Millisecond
	clientBackoffMax = 2 * time.Second
	clientSweepEvery = 30 * time.Second
)

// NewClient builds the client from cfg and connects. An unreachable Redis is not an error: the client
// starts unavailable (its operations return [ErrUnavailable]) and connects in the background. NewClient
// waits for the first attempt until ctx is done; it fails only for a bad configuration or metrics
// registration.
func NewClient(ctx context.Context, cfg Config, opts ...Option) (*Client, error) {
	s := clientSettings{logger: slog.Default()}
	for _, o := range opts {
		o(&s)
	}
	opt, err := cfg.ClientOption()
	if err != nil {
		return nil, err
	}
	m, err := newMetricsSet(s.reg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		logger:  s.logger,
		metrics: m,
		tp:      s.tp,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		first:   make(chan struct{}),
	}
	c.marks.init()
	c.dirty.init()
	c.noteLocalTTL(cfg.EntryTTL)
	opt.OnInvalidations = c.clientOnInvalidations
	base := opt.DialCtxFn
	opt.DialCtxFn = m.conns.dialer(base)
	c.opt = opt
	go c.clientSupervise()
	select {
	case <-c.first:
	case <-ctx.Done():
	}
	if !c.up.Load() {
		c.logger.Warn("Redis is unavailable at start; reads go to the store until it answers",
			"redis", configRedactURL(cfg.URL))
	}
	return c, nil
}

// Rueidis returns the underlying rueidis client, or [ErrUnavailable] while Redis is not known to answer.
// Report the failures of its commands with [Client.Failed] so that the client starts probing.
func (c *Client) Rueidis() (rueidis.Client, error) {
	if !c.up.Load() {
		return nil, ErrUnavailable
	}
	return c.rc.Load().Client, nil
}

// Available reports whether Redis is known to answer.
func (c *Client) Available() bool { return c.up.Load() }

// Config returns the configuration the client was built from.
func (c *Client) Config() Config { return c.cfg }

// Failed reports whether err, returned by a command issued with ctx, means Redis failed (a network error,
// a timeout of the connection, a closed client, or a reply such as LOADING or MASTERDOWN) rather than a
// reply to the command (including a nil reply) or the caller giving up (ctx done). When it does, the
// client becomes unavailable and probes Redis until it answers.
func (c *Client) Failed(ctx context.Context, err error) bool {
	if !clientIsFailure(ctx, err) {
		return false
	}
	if c.up.CompareAndSwap(true, false) {
		c.logger.Warn("Redis failed; falling back to the store until it answers again", "err", err)
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// clientOutageReplies are Redis replies that say the server cannot serve now, not that the command is wrong.
var clientOutageReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM"}

func clientIsFailure(ctx context.Context, err error) bool {
	if err == nil || rueidis.IsRedisNil(err) {
		return false
	}
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg := re.Error()
		for _, p := range clientOutageReplies {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	if ctx.Err() != nil {
		return errors.Is(context.Cause(ctx), clientErrSlow)
	}
	return true
}

// Close stops the reconnect loop, makes a last attempt to invalidate dirty keys, and closes the
// connections. The client is unavailable afterwards.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
		rc := c.rc.Load()
		if rc != nil && c.up.Load() && c.dirty.n.Load() > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.WriteTimeout)
			if err := c.dirtyFlush(ctx, rc.Client); err != nil {
				c.logger.Warn("closing with keys whose stale cache entries could not be invalidated",
					"keys", c.dirty.n.Load(), "err", err)
			}
			cancel()
		}
		c.up.Store(false)
		if rc != nil {
			rc.Close()
		}
	})
}

// clientSupervise is the client's one goroutine: it connects, probes after failures with bounded
// exponential backoff, and sweeps expired write marks, until Close.
func (c *Client) clientSupervise() {
	defer close(c.done)
	firstDone := false
	backoff := clientBackoffMin
	sweep := time.NewTicker(clientSweepEvery)
	defer sweep.Stop()
	for {
		if !c.up.Load() {
			ok := c.clientConnect()
			if !firstDone {
				close(c.first)
				firstDone = true
			}
			if ok {
				backoff = clientBackoffMin
				continue
			}
			t := time.NewTimer(backoff)
			select {
			case <-c.stop:
				t.Stop()
				return
			case <-sweep.C:
				c.marks.sweep(time.Now())
			case <-t.C:
			}
			t.Stop()
			backoff = min(2*backoff, clientBackoffMax)
			continue
		}
		select {
		case <-c.stop:
			return
		case <-c.kick:
		case <-sweep.C:
			c.marks.sweep(time.Now())
		}
	}
}

// clientConnect builds the rueidis client if there is none yet, checks that Redis answers, invalidates the
// dirty keys, and only then marks the client available.
func (c *Client) clientConnect() bool {
	rc := c.rc.Load()
	if rc == nil {
		r, err := rueidis.NewClient(c.opt)
		if err != nil {
			c.logger.Debug("Redis connection attempt failed", "err", err)
			return false
		}
		rc = &clientConn{traceRedis(r, c.tp)}
		c.rc.Store(rc)
	}
	ctx, cancel := clientOpCtx(context.Background(), c.cfg.DialTimeout+c.cfg.WriteTimeout)
	defer cancel()
	start := time.Now()
	if err := rc.Do(ctx, rc.B().Ping().Build()).Error(); err != nil {
		c.logger.Debug("Redis probe failed", "err", err)
		return false
	}
	c.metrics.observe("ping", start)
	if err := c.dirtyFlush(ctx, rc.Client); err != nil {
		c.logger.Debug("Redis answers but dirty keys could not be invalidated yet", "err", err)
		return false
	}
	if c.up.CompareAndSwap(false, true) {
		c.logger.Info("Redis is available", "redis", configRedactURL(c.cfg.URL))
	}
	return true
}

// noteLocalTTL records that a strategy keeps client-side copies for up to d.
func (c *Client) noteLocalTTL(d time.Duration) {
	for {
		cur := c.localTTL.Load()
		if int64(d) <= cur || c.localTTL.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// clientOnInvalidations runs on rueidis' connection reader for every invalidation push, after rueidis
// dropped the keys from its client-side cache; it must be fast. keys is nil when a connection closed or
// the server flushed: then the whole client-side cache of that connection is gone.
//
// An invalidation alone does not clear a write mark: rueidis spreads commands over several pipelined
// connections, so an invalidation that arrives after this client's write was acknowledged on another
// connection may be older than that write (see [ReadThrough]). It stops the clock of
// redis_invalidation_lag_seconds.
func (c *Client) clientOnInvalidations(keys []rueidis.RedisMessage) {
	if keys == nil || c.marks.n.Load() == 0 {
		return
	}
	now := time.Now()
	for i := range keys {
		k, err := keys[i].ToString()
		if err != nil {
			continue
		}
		if lag, ok := c.marks.invalidated(k, now); ok {
			c.metrics.invalidationLag.Observe(lag.Seconds())
		}
	}
}

// clientShardCount is the number of lock shards of the mark and dirty maps.
const clientShardCount = 32

func clientShard(key string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return h % clientShardCount
}

// clientMark is one written key whose old value may still be in this client's client-side cache.
//
// Marks of fills (a reader's lease and value) are not strict: what they guard against is the reader's own
// client-side copy of the absent key, which can only send a read to the store again, never serve a stale
// value. An invalidation of the key drops them, and they expire within a second anyway.
type clientMark struct {
	strict  bool      // a write of the store's state (write-through, write-around), not only a fill
	seq     uint64    // bumped when a write of the key starts
	pending int       // writes started and not yet acknowledged by Redis (or given up)
	version int64     // the highest version written: a local copy with at least this version is fresh
	dropAll bool      // an invalidation was written: no local copy is fresh
	ackedAt time.Time // when the last write was acknowledged
	expires time.Time // after this every local copy older than the writes has expired
	lagSeen bool      // the invalidation lag of the last write was observed
}

// clientMarkView is a snapshot of a mark taken at the start of a read.
type clientMarkView struct {
	seq     uint64
	pending int
	version int64
	dropAll bool
}

type clientMarks struct {
	n      atomic.Int64
	shards [clientShardCount]struct {
		mu sync.Mutex
		m  map[string]*clientMark
	}
}

func (ms *clientMarks) init() {
	for i := range ms.shards {
		ms.shards[i].m = map[string]*clientMark{}
	}
}

// clientFillMarkTTL is how long a fill's mark lives at most.
const clientFillMarkTTL = time.Second

// begin marks key as being written (strict: the store's state changed) and returns the write's sequence
// number.
func (ms *clientMarks) begin(key string, strict bool) uint64 {
	s := &ms.shards[clientShard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	mk := s.m[key]
	if mk == nil {
		mk = &clientMark{}
		s.m[key] = mk
		ms.n.Add(1)
	}
	mk.seq++
	mk.pending++
	mk.strict = mk.strict || strict
	return mk.seq
}

// ack ends a write started with begin: version is what Redis now holds at least (or drop, when the
// write left a tombstone or nothing trustworthy), and local copies live at most localTTL.
func (ms *clientMarks) ack(key string, version int64, drop bool, localTTL time.Duration) {
	s := &ms.shards[clientShard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	mk := s.m[key]
	if mk == nil {
		return
	}
	mk.pending--
	mk.version = max(mk.version, version)
	mk.dropAll = mk.dropAll || drop
	now := time.Now()
	mk.ackedAt = now
	if !mk.strict {
		localTTL = clientFillMarkTTL
	}
	if exp := now.Add(localTTL); exp.After(mk.expires) {
		mk.expires = exp
	}
	mk.lagSeen = false
}

func (ms *clientMarks) view(key string) (clientMarkView, bool) {
	s := &ms.shards[clientShard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	mk := s.m[key]
	if mk == nil {
		return clientMarkView{}, false
	}
	return clientMarkView{seq: mk.seq, pending: mk.pending, version: mk.version, dropAll: mk.dropAll}, true
}

// clear drops the mark if no write started since the snapshot with sequence seq.
func (ms *clientMarks) clear(key string, seq uint64) {
	s := &ms.shards[clientShard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if mk := s.m[key]; mk != nil && mk.seq == seq && mk.pending == 0 {
		delete(s.m, key)
		ms.n.Add(-1)
	}
}

// invalidated notes the arrival of key's invalidation and returns the lag since the write's
// acknowledgement the first time.
func (ms *clientMarks) invalidated(key string, now time.Time) (time.Duration, bool) {
	s := &ms.shards[clientShard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	mk := s.m[key]
	if mk == nil || mk.pending > 0 {
		return 0, false
	}
	if !mk.strict {
		delete(s.m, key)
		ms.n.Add(-1)
		return 0, false
	}
	if mk.lagSeen {
		return 0, false
	}
	mk.lagSeen = true
	return now.Sub(mk.ackedAt), true
}

func (ms *clientMarks) sweep(now time.Time) {
	for i := range ms.shards {
		s := &ms.shards[i]
		s.mu.Lock()
		for k, mk := range s.m {
			if mk.pending == 0 && now.After(mk.expires) {
				delete(s.m, k)
				ms.n.Add(-1)
			}
		}
		s.mu.Unlock()
	}
}

// clientDirty holds the keys whose cache entry may be stale because neither the new value nor an
// invalidation reached Redis after the store changed. A key's generation grows with every failure, so an
// invalidation sent before a later failure does not clear it.
type clientDirty struct {
	n    atomic.Int64
	mu   sync.Mutex
	gen  uint64
	keys map[string]clientDirtyKey
}

type clientDirtyKey struct {
	tombstone time.Duration
	gen       uint64
}

func (d *clientDirty) init() { d.keys = map[string]clientDirtyKey{} }

func (c *Client) dirtyAdd(key string, tombstone time.Duration) {
	d := &c.dirty
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if _, ok := d.keys[key]; !ok {
		d.n.Add(1)
	}
	d.keys[key] = clientDirtyKey{tombstone: tombstone, gen: d.gen}
}

func (c *Client) dirtyHas(key string) bool {
	if c.dirty.n.Load() == 0 {
		return false
	}
	c.dirty.mu.Lock()
	_, ok := c.dirty.keys[key]
	c.dirty.mu.Unlock()
	return ok
}

func (c *Client) dirtyDone(key string, gen uint64) {
	d := &c.dirty
	d.mu.Lock()
	defer d.mu.Unlock()
	if k, ok := d.keys[key]; ok && k.gen == gen {
		delete(d.keys, key)
		d.n.Add(-1)
	}
}

// dirtyResolve invalidates key now if it is dirty, and reports whether the cache may be trusted for it.
func (c *Client) dirtyResolve(ctx context.Context, key string) bool {
	c.dirty.mu.Lock()
	k, ok := c.dirty.keys[key]
	c.dirty.mu.Unlock()
	if !ok {
		return true
	}
	ctx, cancel := clientOpCtx(ctx, c.cfg.WriteTimeout)
	defer cancel()
	if !c.waInvalidate(ctx, key, k.tombstone) {
		return false
	}
	c.dirtyDone(key, k.gen)
	return true
}

// dirtyFlush invalidates every dirty key, in pipelines of up to 256 commands.
func (c *Client) dirtyFlush(ctx context.Context, rc rueidis.Client) error {
	if c.dirty.n.Load() == 0 {
		return nil
	}
	type item struct {
		key string
		k   clientDirtyKey
	}
	c.dirty.mu.Lock()
	items := make([]item, 0, len(c.dirty.keys))
	for key, k := range c.dirty.keys {
		items = append(items, item{key, k})
	}
	c.dirty.mu.Unlock()
	for len(items) > 0 {
		batch := items[:min(len(items), 256)]
		items = items[len(batch):]
		cmds := make(rueidis.Commands, len(batch))
		for i, it := range batch {
			cmds[i] = waTombstoneCmd(rc, it.key, it.k.tombstone)
		}
		start := time.Now()
		for i, res := range rc.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				return err
			}
			c.dirtyDone(batch[i].key, batch[i].k.gen)
		}
		c.metrics.observe("invalidate", start)
	}
	return nil
}
