package cachelayer

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The cache's metrics, under the seed's names, registered on the [prometheus.Registerer] given with
// [WithRegisterer] (never on the global registry; without one they are kept but not exported). Several
// clients may share one registry: they share its collectors.
//
//   - redis_hits_total{source="local"|"redis"}: reads answered by the cache: "local" from rueidis'
//     client-side cache (no network), "redis" from Redis.
//   - redis_misses_total: reads the cache could not answer (absent, being filled, or just invalidated), so
//     the store answered.
//   - redis_operations_duration_seconds{operation}: Redis round trips, by operation (get, set, invalidate,
//     fill, lease, lock, unlock, extend, pipeline, tx, ping). Local hits are not round trips and are not
//     observed.
//   - redis_fallbacks_total{operation}: operations that went to the store (or skipped the cache) because
//     Redis failed or the client was unavailable. Its rate is the share of traffic running without the cache.
//   - redis_invalidation_lag_seconds: for keys this client wrote and had cached, the time from Redis'
//     acknowledgement of the write to the arrival of its invalidation on this client, the floor of the window
//     in which other instances may still serve the old value.
//   - redis_connections_active and redis_connections_idle: rueidis has no pool of interchangeable
//     connections to count: it pipelines every goroutine's commands over a few long-lived connections per
//     node (plus a pool for blocking commands and dedicated clients). Both gauges count the TCP connections
//     this process has open to Redis (counted in the dialer): "active" ones wrote a command in the last
//     second, "idle" ones wrote nothing but rueidis' keep-alive PING. Their sum is the open connections.
type metricsSet struct {
	hitsLocal, hitsRedis prometheus.Counter
	misses               prometheus.Counter
	durations            *prometheus.HistogramVec
	fallbacks            *prometheus.CounterVec
	invalidationLag      prometheus.Histogram
	conns                *metricsConns
}

func newMetricsSet(reg prometheus.Registerer) (*metricsSet, error) {
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "redis_hits_total",
		Help: "Cache reads answered by the cache: source=local from the client-side cache, source=redis from Redis.",
	}, []string{"source"})
	misses := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "redis_misses_total",
		Help: "Cache reads the cache could not answer, answered by the store.",
	})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "redis_operations_duration_seconds",
		Help:    "Redis round trips by operation (client-side cache hits excluded).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"operation"})
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "redis_fallbacks_total",
		Help: "Operations that went to the store or skipped the cache because Redis failed or was unavailable.",
	}, []string{"operation"})
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "redis_invalidation_lag_seconds",
		Help:    "Time from Redis acknowledging this client's write to the write's invalidation reaching this client.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25},
	})
	conns := newMetricsConns()
	m := &metricsSet{misses: misses, durations: durations, fallbacks: fallbacks, invalidationLag: lag, conns: conns}
	if reg != nil {
		var err error
		if hits, err = metricsRegister(reg, hits); err != nil {
			return nil, err
		}
		if m.misses, err = metricsRegister(reg, misses); err != nil {
			return nil, err
		}
		if m.durations, err = metricsRegister(reg, durations); err != nil {
			return nil, err
		}
		if m.fallbacks, err = metricsRegister(reg, fallbacks); err != nil {
			return nil, err
		}
		if m.invalidationLag, err = metricsRegister(reg, lag); err != nil {
			return nil, err
		}
		if m.conns, err = metricsRegister(reg, conns); err != nil {
			return nil, err
		}
	}
	m.hitsLocal = hits.WithLabelValues("local")
	m.hitsRedis = hits.WithLabelValues("redis")
	// The operations that fall back are exported at 0 from the start, so that a dashboard's
	// series exist before Redis first fails.
	for _, op := range []string{"get", "get_or_load", "set", "invalidate"} {
		m.fallbacks.WithLabelValues(op)
	}
	return m, nil
}

// metricsRegister registers c, or returns the collector already registered under its name.
func metricsRegister[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// observe records one Redis round trip of operation op that started at start.
func (m *metricsSet) observe(op string, start time.Time) {
	m.durations.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *metricsSet) fallback(op string) { m.fallbacks.WithLabelValues(op).Inc() }

// metricsConns counts the open connections of every client registered with it and classifies them at
// scrape time (a custom collector, so that several clients can share it).
type metricsConns struct {
	mu     sync.Mutex
	open   map[*metricsConn]struct{}
	active *prometheus.Desc
	idle   *prometheus.Desc
}

func newMetricsConns() *metricsConns {
	return &metricsConns{
		open: map[*metricsConn]struct{}{},
		active: prometheus.NewDesc("redis_connections_active",
			"Open connections to Redis that wrote a command (other than the keep-alive PING) in the last second.", nil, nil),
		idle: prometheus.NewDesc("redis_connections_idle",
			"Open connections to Redis that wrote nothing but keep-alive PINGs in the last second.", nil, nil),
	}
}

// metricsActiveWindow is how recent a connection's last command must be for it to count as active.
const metricsActiveWindow = time.Second

func (m *metricsConns) Describe(ch chan<- *prometheus.Desc) { ch <- m.active; ch <- m.idle }

func (m *metricsConns) Collect(ch chan<- prometheus.Metric) {
	active, idle := m.counts(time.Now())
	ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(m.idle, prometheus.GaugeValue, float64(idle))
}

func (m *metricsConns) counts(now time.Time) (active, idle int) {
	cutoff := now.Add(-metricsActiveWindow).UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.open {
		if c.lastCommand.Load() >= cutoff {
			active++
		} else {
			idle++
		}
	}
	return active, idle
}

// dialer returns the client's rueidis DialCtxFn: base (rueidis' own dialing when nil: TCP, then TLS when
// configured), with each connection counted until it is closed.
func (m *metricsConns) dialer(base func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error)) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, addr string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		var (
			conn net.Conn
			err  error
		)
		switch {
		case base != nil:
			conn, err = base(ctx, addr, d, cfg)
		case cfg != nil:
			conn, err = (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
		default:
			conn, err = d.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, err
		}
		c := &metricsConn{Conn: conn, owner: m}
		c.lastCommand.Store(time.Now().UnixNano())
		m.mu.Lock()
		m.open[c] = struct{}{}
		m.mu.Unlock()
		return c, nil
	}
}

// metricsConn is a counted connection.
type metricsConn struct {
	net.Conn
	owner       *metricsConns
	lastCommand atomic.Int64 // unix ns of the last write that was not a bare keep-alive PING
	closed      atomic.Bool
}

// metricsPing is how rueidis writes its keep-alive PING on an otherwise silent connection.
const metricsPing = "*1\r\n$4\r\nPING\r\n"

func (c *metricsConn) Write(b []byte) (int, error) {
	if len(b) != len(metricsPing) || string(b) != metricsPing {
		c.lastCommand.Store(time.Now().UnixNano())
	}
	return c.Conn.Write(b)
}

func (c *metricsConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.owner.mu.Lock()
		delete(c.owner.open, c)
		c.owner.mu.Unlock()
	}
	return c.Conn.Close()
}
