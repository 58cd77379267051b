package cachelayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// FlushFunc applies one batch of counts to the durable store. batchID is
// unique per batch and stable across retries: the store must apply a batch
// id at most once (core-dict records it in the same transaction), so a
// batch retried after a crash between the store's commit and the Redis
// cleanup is never counted twice.
type FlushFunc func(ctx context.Context, batchID string, counts map[string]int64) error

// WriteBehindCounter is the write-behind strategy for counters: increments
// land in a Redis hash (one HINCRBY, no store round trip on the hot path)
// and are flushed to the store in batches. Pending counts live in Redis, so
// they survive a restart of the process; Close flushes them on shutdown.
// While Redis fails, increments are kept in process and flushed straight to
// the store, so nothing is lost either way.
//
// Several instances may share one counter: a flush first renames the
// pending hash to a batch of its own (atomically, in Lua), so each
// increment belongs to exactly one batch.
type WriteBehindCounter struct {
	src      RedisSource
	pending  string // {wb:name}:pending
	batches  string // {wb:name}:batches, the set of batch ids not yet applied
	prefix   string // {wb:name}:batch:
	flush    FlushFunc
	interval time.Duration
	logger   *slog.Logger

	mu    sync.Mutex
	local map[string]int64 // increments made while Redis failed

	fallbacks prometheus.Counter
	flushed   prometheus.Counter
	flushErrs prometheus.Counter

	started bool
	stop    chan struct{}
	done    chan struct{}
}

// WriteBehindOption configures a [WriteBehindCounter].
type WriteBehindOption func(*WriteBehindCounter)

// WithFlushInterval sets how often Run flushes (default 5 s).
func WithFlushInterval(d time.Duration) WriteBehindOption {
	return func(w *WriteBehindCounter) { w.interval = d }
}

// WithWriteBehindRegisterer registers the counter's metrics on reg.
func WithWriteBehindRegisterer(reg prometheus.Registerer) WriteBehindOption {
	return func(w *WriteBehindCounter) {
		reg.MustRegister(w.fallbacks, w.flushed, w.flushErrs)
	}
}

// WithWriteBehindLogger sets the logger of flush failures.
func WithWriteBehindLogger(l *slog.Logger) WriteBehindOption {
	return func(w *WriteBehindCounter) { w.logger = l }
}

// NewWriteBehindCounter returns a counter named name (its Redis keys share
// the hash tag {wb:name}, so its scripts work on Redis Cluster).
func NewWriteBehindCounter(src RedisSource, name string, flush FlushFunc, opts ...WriteBehindOption) *WriteBehindCounter {
	tag := "{wb:" + name + "}"
	w := &WriteBehindCounter{
		src:      src,
		pending:  tag + ":pending",
		batches:  tag + ":batches",
		prefix:   tag + ":batch:",
		flush:    flush,
		interval: 5 * time.Second,
		logger:   slog.Default(),
		local:    map[string]int64{},
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "write_behind_fallbacks_total", Help: "Increments kept in process because Redis failed.",
			ConstLabels: prometheus.Labels{"counter": name},
		}),
		flushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "write_behind_flushed_total", Help: "Counts flushed to the store.",
			ConstLabels: prometheus.Labels{"counter": name},
		}),
		flushErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "write_behind_flush_errors_total", Help: "Flushes that failed and will be retried.",
			ConstLabels: prometheus.Labels{"counter": name},
		}),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Incr adds n to field. It never fails: when Redis does, the increment is
// kept in process until the next flush.
func (w *WriteBehindCounter) Incr(ctx context.Context, field string, n int64) {
	if r, err := w.src.Rueidis(); err == nil {
		err = r.Do(ctx, r.B().Hincrby().Key(w.pending).Field(field).Increment(n).Build()).Error()
		if err == nil {
			return
		}
		sourceFailed(ctx, w.src, err)
	}
	w.fallbacks.Inc()
	w.mu.Lock()
	w.local[field] += n
	w.mu.Unlock()
}

// wbRotate moves the pending hash to a new batch and records the batch id,
// atomically; it returns 0 when nothing was pending.
var wbRotate = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
`)

// Flush applies every pending count to the store: first batches a previous
// flush left behind (this instance's or another's), then what is pending
// now, then what was kept in process while Redis failed.
func (w *WriteBehindCounter) Flush(ctx context.Context) error {
	var errs []error
	if r, err := w.src.Rueidis(); err == nil {
		if err := w.flushRedis(ctx, r); err != nil {
			sourceFailed(ctx, w.src, err)
			errs = append(errs, err)
		}
	}
	if err := w.flushLocal(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		w.flushErrs.Inc()
		return err
	}
	return nil
}

func (w *WriteBehindCounter) flushRedis(ctx context.Context, r rueidis.Client) error {
	id := newBatchID()
	if err := wbRotate.Exec(ctx, r, []string{w.pending, w.prefix + id, w.batches}, []string{id}).Error(); err != nil {
		return err
	}
	ids, err := r.Do(ctx, r.B().Smembers().Key(w.batches).Build()).AsStrSlice()
	if err != nil {
		return err
	}
	for _, id := range ids {
		raw, err := r.Do(ctx, r.B().Hgetall().Key(w.prefix+id).Build()).AsStrMap()
		if err != nil {
			return err
		}
		counts := make(map[string]int64, len(raw))
		var total int64
		for k, v := range raw {
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil {
				continue
			}
			counts[k] = n
			total += n
		}
		if len(counts) > 0 {
			if err := w.flush(ctx, id, counts); err != nil {
				return err
			}
		}
		// Applied (or empty): forget the batch. If this fails, the next
		// flush finds it again and the store skips the known batch id.
		if err := r.Do(ctx, r.B().Del().Key(w.prefix+id).Build()).Error(); err != nil {
			return err
		}
		if err := r.Do(ctx, r.B().Srem().Key(w.batches).Member(id).Build()).Error(); err != nil {
			return err
		}
		w.flushed.Add(float64(total))
	}
	return nil
}

func (w *WriteBehindCounter) flushLocal(ctx context.Context) error {
	w.mu.Lock()
	counts := w.local
	w.local = map[string]int64{}
	w.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	if err := w.flush(ctx, "local-"+newBatchID(), counts); err != nil {
		w.mu.Lock()
		for k, n := range counts {
			w.local[k] += n
		}
		w.mu.Unlock()
		return err
	}
	var total int64
	for _, n := range counts {
		total += n
	}
	w.flushed.Add(float64(total))
	return nil
}

// Start flushes every interval, in a goroutine the counter owns, until Close.
func (w *WriteBehindCounter) Start() {
	w.started = true
	go w.run()
}

func (w *WriteBehindCounter) run() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), w.interval)
			if err := w.Flush(ctx); err != nil {
				w.logger.Warn("write-behind flush failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// Close stops the flushing goroutine (if Start was called) and flushes what
// is pending.
func (w *WriteBehindCounter) Close(ctx context.Context) error {
	close(w.stop)
	if w.started {
		<-w.done
	}
	return w.Flush(ctx)
}

func newBatchID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}
