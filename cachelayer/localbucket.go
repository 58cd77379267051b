package cachelayer

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// The in-process fallback.
//
// Every Redis limiter ([TokenBucket], [SlidingWindow], [RateLimiter]) holds an in-process twin with the
// same parameters and the same arithmetic ([LocalTokenBucket], [LocalSlidingWindow], [LocalRateLimiter]).
// When a call to Redis fails because Redis is unavailable (connection refused or lost, the limiter's
// timeout, LOADING, BUSY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, READONLY, OOM), the call is answered by the
// twin, rate_limit_fallbacks_total{limiter} counts it, and the limiter stays on the twin. Once per probe
// interval ([WithLimitProbeInterval], default 1s) one call tries Redis again; when Redis answers, that
// answer is used and the limiter is back on Redis. Nothing runs in the background. (rueidis pipelines
// over a few connections; right after Redis returns, one that has not reconnected yet may fail a call,
// which then falls back until the next probe: a blip of per-instance decisions, not a stall.)
//
// Errors that are not an outage are returned, not hidden: the caller's own context ending, a script
// error, a wrong parameter.
//
// The trade-off: during an outage each instance limits on its own state, so with n instances behind a
// load balancer a key may get up to n times its allowance, and what was spent in Redis before the
// outage is not known locally (the local buckets start full). What was spent locally is not copied to
// Redis when it returns. We accept this because refusing every lookup while Redis is down would stop
// payments, and the DICT enforces its own buckets anyway; a PSP that wants to stay strictly below the
// DICT during an outage can give its instances smaller parameters.
//
// The twins are also usable on their own, as the in-process limiters of unit tests.

// limitBase is the part every Redis limiter shares: its counters and the switch between Redis and the
// in-process twin.
type limitBase struct {
	name      string
	timeout   time.Duration
	probe     time.Duration
	logger    *slog.Logger
	counters  limitCounters
	failer    limitFailer // told of Redis failures, when the source wants to know
	down      atomic.Bool
	nextProbe atomic.Int64 // unix ns: when the next call may try Redis while down
}

// limitFailer is the optional side of a [RedisSource] (or a [GCRAScripter]) that wants to hear of the
// Redis failures a limiter sees, as [*Client] does.
type limitFailer interface {
	Failed(ctx context.Context, err error) bool
}

func newLimitBase(cfg limitConfig, src any) (*limitBase, error) {
	counters, err := cfg.counters()
	if err != nil {
		return nil, err
	}
	b := &limitBase{name: cfg.name, timeout: cfg.timeout, probe: cfg.probe, logger: cfg.logger, counters: counters}
	switch s := src.(type) {
	case limitFailer:
		b.failer = s
	case gcraRueidis:
		b.failer, _ = s.src.(limitFailer)
	}
	return b, nil
}

// useRedis reports whether this call goes to Redis: always while Redis is up; while it is down, one call
// per probe interval.
func (b *limitBase) useRedis() bool {
	if !b.down.Load() {
		return true
	}
	now := time.Now().UnixNano()
	next := b.nextProbe.Load()
	return now >= next && b.nextProbe.CompareAndSwap(next, now+int64(b.probe))
}

func (b *limitBase) failed(err error) {
	b.nextProbe.Store(time.Now().Add(b.probe).UnixNano())
	if !b.down.Swap(true) {
		b.logger.Warn("rate limiter: Redis unavailable, deciding in process", "limiter", b.name, "err", err)
	}
}

func (b *limitBase) answered() {
	if b.down.Load() && b.down.CompareAndSwap(true, false) {
		b.logger.Info("rate limiter: Redis answers again, deciding in Redis", "limiter", b.name)
	}
}

// limitRun asks Redis (remote) unless the limiter is on its twin, and the twin (local) when Redis is
// unavailable.
func limitRun[T any](ctx context.Context, b *limitBase, remote func(context.Context) (T, error), local func() T) (T, error) {
	if b.useRedis() {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if b.timeout > 0 {
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > b.timeout {
				rctx, cancel = context.WithTimeout(ctx, b.timeout)
			}
		}
		v, err := remote(rctx)
		cancel()
		if err == nil {
			b.answered()
			return v, nil
		}
		if !limitIsOutage(ctx, err) {
			var zero T
			return zero, err
		}
		if b.failer != nil {
			b.failer.Failed(ctx, err)
		}
		b.failed(err)
	}
	b.counters.fellBack()
	return local(), nil
}

// limitOutageReplies are the Redis error replies that mean "not now" rather than "wrong request".
var limitOutageReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM"}

// limitIsOutage reports whether err means Redis is unavailable, as opposed to the caller giving up (ctx
// done) or Redis refusing the request itself.
func limitIsOutage(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var msg string
	var goErr redis.Error
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg = re.Error()
	} else if errors.As(err, &goErr) {
		msg = goErr.Error()
	} else {
		return true // network, timeout, closed client
	}
	for _, p := range limitOutageReplies {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// limitLocalNow is the twins' clock: the test clock if one was given, else the process's.
func limitLocalNow(cfg limitConfig) func() time.Time {
	if cfg.clock != nil {
		return cfg.clock
	}
	return time.Now
}

// limitSweepEvery is how often (on the limiter's clock) a twin drops the keys that have expired, as
// Redis would have.
const limitSweepEvery = time.Minute

// LocalTokenBucket is the in-process [TokenBucket]: same parameters, same arithmetic (bit for bit), state
// in this process only. The Redis TokenBucket falls back to one while Redis is unavailable.
type LocalTokenBucket struct {
	now       func() time.Time
	counters  limitCounters
	mu        sync.Mutex
	buckets   map[string]tbLocalState
	nextSweep int64
}

type tbLocalState struct {
	balance float64
	last    int64 // ms
	expires int64 // ms: when the bucket is full again
}

// NewLocalTokenBucket returns an in-process token bucket (name label default: token_bucket_local).
func NewLocalTokenBucket(opts ...LimitOption) (*LocalTokenBucket, error) {
	cfg, err := newLimitConfig("token_bucket_local", "", opts)
	if err != nil {
		return nil, err
	}
	l := newLocalTokenBucket(cfg)
	if l.counters, err = cfg.counters(); err != nil {
		return nil, err
	}
	return l, nil
}

func newLocalTokenBucket(cfg limitConfig) *LocalTokenBucket {
	return &LocalTokenBucket{now: limitLocalNow(cfg), buckets: map[string]tbLocalState{}}
}

// Check is [TokenBucket.Check] in process.
func (l *LocalTokenBucket) Check(_ context.Context, key string, p BucketParams, min float64) (Decision, error) {
	return l.call(key, p, "check", min)
}

// Take is [TokenBucket.Take] in process.
func (l *LocalTokenBucket) Take(_ context.Context, key string, p BucketParams, cost float64) (Decision, error) {
	return l.call(key, p, "take", cost)
}

// Charge is [TokenBucket.Charge] in process.
func (l *LocalTokenBucket) Charge(_ context.Context, key string, p BucketParams, cost float64) (Decision, error) {
	return l.call(key, p, "charge", cost)
}

// Credit is [TokenBucket.Credit] in process.
func (l *LocalTokenBucket) Credit(_ context.Context, key string, p BucketParams, amount float64) (Decision, error) {
	return l.call(key, p, "credit", amount)
}

func (l *LocalTokenBucket) call(key string, p BucketParams, op string, amount float64) (Decision, error) {
	if err := p.validate(); err != nil {
		return Decision{}, err
	}
	if err := tbAmount(p, op, amount, op == "check" || op == "take"); err != nil {
		return Decision{}, err
	}
	d := l.apply(key, p, op, amount)
	if op == "check" || op == "take" {
		l.counters.decided(d.Allowed)
	}
	return d, nil
}

// apply is tokenbucket.lua in Go, in the same order of operations.
func (l *LocalTokenBucket) apply(key string, p BucketParams, op string, amount float64) Decision {
	now := l.now().UnixMilli()
	period := float64(p.RefillPeriod.Milliseconds())
	l.mu.Lock()
	defer l.mu.Unlock()
	if now >= l.nextSweep {
		for k, st := range l.buckets {
			if st.expires <= now {
				delete(l.buckets, k)
			}
		}
		l.nextSweep = now + limitSweepEvery.Milliseconds()
	}

	balance := p.Capacity
	if st, ok := l.buckets[key]; ok {
		balance = st.balance
		if now > st.last {
			balance = balance + float64(now-st.last)*p.RefillTokens/period
		} else {
			now = st.last
		}
		if balance > p.Capacity {
			balance = p.Capacity
		}
	}

	allowed, need, write := true, 1.0, false
	switch op {
	case "check":
		need = amount
		allowed = balance >= amount
	case "take":
		need = amount
		if balance >= amount {
			balance = balance - amount
			write = true
		} else {
			allowed = false
		}
	case "charge":
		balance = balance - amount
		allowed = balance >= 1
		write = true
	case "credit":
		balance = balance + amount
		if balance > p.Capacity {
			balance = p.Capacity
		}
		allowed = balance >= 1
		write = true
	}
	if write {
		if balance >= p.Capacity {
			delete(l.buckets, key)
		} else {
			l.buckets[key] = tbLocalState{balance: balance, last: now,
				expires: now + int64(math.Ceil((p.Capacity-balance)*period/p.RefillTokens))}
		}
	}
	d := Decision{Allowed: allowed, Balance: balance}
	if !allowed {
		d.RetryAfter = time.Duration(math.Ceil((need-balance)*period/p.RefillTokens)) * time.Millisecond
	}
	return d
}

// LocalSlidingWindow is the in-process [SlidingWindow]: at most limit requests per key in any window.
type LocalSlidingWindow struct {
	limit     int64
	window    int64 // ms
	now       func() time.Time
	counters  limitCounters
	mu        sync.Mutex
	entries   map[string][]int64 // ms of each request in the window, ascending
	nextSweep int64
}

// NewLocalSlidingWindow returns an in-process sliding window (name label default: sliding_window_local).
func NewLocalSlidingWindow(limit int64, window time.Duration, opts ...LimitOption) (*LocalSlidingWindow, error) {
	cfg, err := newLimitConfig("sliding_window_local", "", opts)
	if err != nil {
		return nil, err
	}
	if err := swValidate(limit, window); err != nil {
		return nil, err
	}
	l := newLocalSlidingWindow(limit, window, cfg)
	if l.counters, err = cfg.counters(); err != nil {
		return nil, err
	}
	return l, nil
}

func newLocalSlidingWindow(limit int64, window time.Duration, cfg limitConfig) *LocalSlidingWindow {
	return &LocalSlidingWindow{limit: limit, window: window.Milliseconds(), now: limitLocalNow(cfg), entries: map[string][]int64{}}
}

// Allow is [SlidingWindow.Allow] in process.
func (l *LocalSlidingWindow) Allow(ctx context.Context, key string) (bool, error) {
	d, err := l.Decide(ctx, key)
	return d.Allowed, err
}

// Decide is [SlidingWindow.Decide] in process.
func (l *LocalSlidingWindow) Decide(_ context.Context, key string) (Decision, error) {
	d := l.apply(key, true)
	l.counters.decided(d.Allowed)
	return d, nil
}

// Peek is [SlidingWindow.Peek] in process.
func (l *LocalSlidingWindow) Peek(_ context.Context, key string) (Decision, error) {
	return l.apply(key, false), nil
}

// Count is [SlidingWindow.Count] in process.
func (l *LocalSlidingWindow) Count(_ context.Context, key string) (int64, error) {
	d := l.apply(key, false)
	return l.limit - int64(d.Balance), nil
}

// apply is slidingwindow.lua in Go: allow records a request when there is room; otherwise only looks.
func (l *LocalSlidingWindow) apply(key string, allow bool) Decision {
	now := l.now().UnixMilli()
	from := now - l.window // entries at or before from are out of the window
	l.mu.Lock()
	defer l.mu.Unlock()
	if now >= l.nextSweep {
		for k, ts := range l.entries {
			if len(ts) == 0 || ts[len(ts)-1] <= from {
				delete(l.entries, k)
			}
		}
		l.nextSweep = now + limitSweepEvery.Milliseconds()
	}
	ts := l.entries[key]
	first := sort.Search(len(ts), func(i int) bool { return ts[i] > from })
	if !allow {
		n := int64(len(ts) - first)
		if n < l.limit {
			return Decision{Allowed: true, Balance: float64(l.limit - n)}
		}
		return Decision{Balance: float64(l.limit - n), RetryAfter: time.Duration(ts[first]+l.window-now) * time.Millisecond}
	}
	ts = ts[first:]
	n := int64(len(ts))
	if n >= l.limit {
		l.entries[key] = ts
		return Decision{Balance: float64(l.limit - n), RetryAfter: time.Duration(ts[0]+l.window-now) * time.Millisecond}
	}
	at := sort.Search(len(ts), func(i int) bool { return ts[i] > now })
	ts = append(ts, 0)
	copy(ts[at+1:], ts[at:])
	ts[at] = now
	l.entries[key] = ts
	return Decision{Allowed: true, Balance: float64(l.limit - n - 1)}
}

// LocalRateLimiter is the in-process [RateLimiter]: the same GCRA as redis_rate, in Go.
type LocalRateLimiter struct {
	limit     RateLimit
	now       func() time.Time
	counters  limitCounters
	mu        sync.Mutex
	tats      map[string]float64 // theoretical arrival time, seconds since the Unix epoch
	nextSweep float64
}

// NewLocalRateLimiter returns an in-process GCRA limiter (name label default: rate_local).
func NewLocalRateLimiter(limit RateLimit, opts ...LimitOption) (*LocalRateLimiter, error) {
	cfg, err := newLimitConfig("rate_local", "", opts)
	if err != nil {
		return nil, err
	}
	if err := limit.validate(); err != nil {
		return nil, err
	}
	l := newLocalRateLimiter(limit, cfg)
	if l.counters, err = cfg.counters(); err != nil {
		return nil, err
	}
	return l, nil
}

func newLocalRateLimiter(limit RateLimit, cfg limitConfig) *LocalRateLimiter {
	return &LocalRateLimiter{limit: limit, now: limitLocalNow(cfg), tats: map[string]float64{}}
}

// Allow is [RateLimiter.Allow] in process.
func (l *LocalRateLimiter) Allow(ctx context.Context, key string) (bool, error) {
	d, err := l.Decide(ctx, key)
	return d.Allowed, err
}

// Decide is [RateLimiter.Decide] in process.
func (l *LocalRateLimiter) Decide(_ context.Context, key string) (Decision, error) {
	d := l.apply(key, true)
	l.counters.decided(d.Allowed)
	return d, nil
}

// Peek is [RateLimiter.Peek] in process.
func (l *LocalRateLimiter) Peek(_ context.Context, key string) (Decision, error) {
	return l.apply(key, false), nil
}

// apply is redis_rate's allowN (take) with n=1, or its allowAtMost with n=0 (peek).
func (l *LocalRateLimiter) apply(key string, take bool) Decision {
	now := float64(l.now().UnixMicro()) / 1e6
	emission := l.limit.Period.Seconds() / float64(l.limit.Rate)
	burstOffset := emission * float64(l.limit.Burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now >= l.nextSweep {
		for k, tat := range l.tats {
			if tat <= now {
				delete(l.tats, k)
			}
		}
		l.nextSweep = now + limitSweepEvery.Seconds()
	}
	tat, ok := l.tats[key]
	if !ok || tat < now {
		tat = now
	}
	if !take {
		diff := now - (tat - burstOffset)
		remaining := diff / emission
		if remaining < 1 {
			return Decision{RetryAfter: limitSeconds(emission - diff)}
		}
		return Decision{Allowed: true, Balance: math.Trunc(remaining)}
	}
	newTAT := tat + emission
	diff := now - (newTAT - burstOffset)
	remaining := diff / emission
	if remaining < 0 {
		return Decision{RetryAfter: limitSeconds(-diff)}
	}
	l.tats[key] = newTAT
	return Decision{Allowed: true, Balance: math.Trunc(remaining)}
}

func limitSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
