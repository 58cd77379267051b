package cachelayer

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// Decision is a limiter's answer.
type Decision struct {
	// Allowed reports whether the request may go ahead. After [TokenBucket.Charge] and
	// [TokenBucket.Credit], which always apply, it reports whether the balance now holds at least one token.
	Allowed bool
	// Balance is what is left: tokens for a [TokenBucket] (may be negative), requests that would still be
	// allowed now for a [SlidingWindow] or a [RateLimiter].
	Balance float64
	// RetryAfter is zero when Allowed; otherwise the time until the request would be allowed (for a
	// bucket: until the balance reaches the amount asked, or one token after a charge or credit).
	RetryAfter time.Duration
}

// ErrLimitParams reports invalid limiter parameters or amounts.
var ErrLimitParams = errors.New("cachelayer: invalid rate limiter parameters")

// BucketParams are a token bucket's size and refill rate.
type BucketParams struct {
	// Capacity is the most tokens the bucket holds; a bucket never seen before is full.
	Capacity float64
	// RefillTokens tokens are added every RefillPeriod, continuously: after a third of the period a third
	// of them has been added (fractions included), never beyond Capacity.
	RefillTokens float64
	// RefillPeriod counts in whole milliseconds (the bucket's clock ticks in ms); at least 1ms.
	RefillPeriod time.Duration
}

func (p BucketParams) validate() error {
	if !(p.Capacity > 0) || math.IsInf(p.Capacity, 0) || !(p.RefillTokens > 0) || math.IsInf(p.RefillTokens, 0) ||
		p.RefillPeriod < time.Millisecond {
		return fmt.Errorf("%w: bucket %+v: capacity and refill tokens must be positive and finite, the refill period at least 1ms", ErrLimitParams, p)
	}
	return nil
}

// tbAmount checks a cost, credit or minimum: finite and not negative; a minimum or a Take's cost above
// the capacity could never be met.
func tbAmount(p BucketParams, what string, amount float64, atMostCapacity bool) error {
	if !(amount >= 0) || math.IsInf(amount, 0) {
		return fmt.Errorf("%w: %s %v must be a finite number >= 0", ErrLimitParams, what, amount)
	}
	if atMostCapacity && amount > p.Capacity {
		return fmt.Errorf("%w: %s %v exceeds the capacity %v and could never be met", ErrLimitParams, what, amount, p.Capacity)
	}
	return nil
}

// LimitOption configures a limiter ([NewTokenBucket], [NewSlidingWindow], [NewRateLimiter], their
// in-process twins and [NewMultiKeyLimiter]).
type LimitOption func(*limitConfig)

type limitConfig struct {
	name    string
	prefix  string
	reg     prometheus.Registerer
	clock   func() time.Time
	probe   time.Duration
	timeout time.Duration
	logger  *slog.Logger
}

// WithLimitName sets the limiter label of the metrics (defaults: token_bucket, sliding_window, ip,
// account, rate, multi_key).
func WithLimitName(name string) LimitOption { return func(c *limitConfig) { c.name = name } }

// WithLimitKeyPrefix sets the prefix of the limiter's Redis keys (defaults: limit:tb:, limit:sw:,
// limit:ip:, limit:account:, limit:rate:; redis_rate adds its own rate: in front).
func WithLimitKeyPrefix(prefix string) LimitOption { return func(c *limitConfig) { c.prefix = prefix } }

// WithLimitRegisterer registers the limiter's metrics (see limitmetrics.go) on reg. Without it the
// limiter counts nothing.
func WithLimitRegisterer(reg prometheus.Registerer) LimitOption {
	return func(c *limitConfig) { c.reg = reg }
}

// WithLimitClock makes the token bucket and the sliding window (and every in-process fallback) read the
// time from now instead of the Redis server's clock: for tests that move a clock by hand. In production
// leave it unset: every instance then shares the server's clock. redis_rate always uses the server's.
func WithLimitClock(now func() time.Time) LimitOption { return func(c *limitConfig) { c.clock = now } }

// WithLimitProbeInterval sets how often a limiter that fell back to its in-process state tries Redis
// again (default 1s): one call per interval goes to Redis, the others stay local.
func WithLimitProbeInterval(d time.Duration) LimitOption {
	return func(c *limitConfig) { c.probe = d }
}

// WithLimitTimeout bounds each call to Redis (default 1s); past it the call is answered in process and
// the limiter falls back. Zero leaves only the caller's deadline.
func WithLimitTimeout(d time.Duration) LimitOption { return func(c *limitConfig) { c.timeout = d } }

// WithLimitLogger logs the switches to and from the in-process fallback (default: slog.Default()).
func WithLimitLogger(l *slog.Logger) LimitOption { return func(c *limitConfig) { c.logger = l } }

func newLimitConfig(name, prefix string, opts []LimitOption) (limitConfig, error) {
	c := limitConfig{name: name, prefix: prefix, probe: time.Second, timeout: time.Second}
	for _, o := range opts {
		o(&c)
	}
	if c.probe <= 0 || c.timeout < 0 {
		return c, fmt.Errorf("%w: probe interval %v must be positive and timeout %v not negative", ErrLimitParams, c.probe, c.timeout)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}

// counters registers the metrics (if a registry was given) and returns this limiter's counters.
func (c limitConfig) counters() (limitCounters, error) {
	if c.reg == nil {
		return limitCounters{}, nil
	}
	m, err := limitMetricsFor(c.reg)
	if err != nil {
		return limitCounters{}, fmt.Errorf("cachelayer: registering the rate limiter metrics: %w", err)
	}
	return m.countersFor(c.name), nil
}

// limitNowMS is the test clock in ms, or "" for the Redis server's clock.
func (c limitConfig) limitNowMS() string {
	if c.clock == nil {
		return ""
	}
	return strconv.FormatInt(c.clock().UnixMilli(), 10)
}

// limitKey is the Redis key of a limiter's key: one key per bucket, in its own Redis Cluster hash slot.
// A key that already carries a hash tag ({...}) keeps it, so callers may co-locate keys on purpose.
func limitKey(prefix, key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 && strings.IndexByte(key[i+1:], '}') > 0 {
		return prefix + key
	}
	return prefix + "{" + key + "}"
}

//go:embed tokenbucket.lua
var tbSource string

var tbScript = rueidis.NewLuaScript(tbSource)

// TokenBucket is the DICT's anti-scanning token bucket, in Redis (one Lua script, loaded once and called
// by SHA), with an in-process fallback ([LocalTokenBucket], same parameters and arithmetic) while Redis
// is unavailable.
//
// The semantics are the DICT's: a bucket never seen is full; it refills continuously (RefillTokens per
// RefillPeriod, pro rata to the millisecond, fractions kept) up to Capacity; a lookup is admitted with
// [TokenBucket.Check] when at least one token (or a given minimum) is left, and its real cost is deducted
// afterwards with [TokenBucket.Charge], which may leave the balance negative (a not-found on a nearly
// empty bucket); [TokenBucket.Credit] adds a payment's credit, never beyond Capacity. The debt has no
// floor: lookups admitted together on the last token each pay their full cost, and the bucket stays shut
// until refill has paid it all back (RetryAfter says how long).
// Check and Charge are two steps by design (the cost is known only after the lookup), so the only
// guarantee between them is the DICT's: no lookup starts on an empty bucket.
// [TokenBucket.Take] is the generic check-and-deduct: allowed only when the whole cost is there.
//
// Time is the Redis server's clock (TIME inside the script), so all instances agree, unless
// [WithLimitClock] is given. A bucket's key expires when it would be full again, so idle buckets vanish;
// a bucket that reaches its capacity is deleted, which is the same as full.
type TokenBucket struct {
	src    RedisSource
	cfg    limitConfig
	base   *limitBase
	local  *LocalTokenBucket
	prefix string
}

// NewTokenBucket returns a token bucket limiter on the Redis of src. The parameters come with each call, so one
// TokenBucket serves buckets of every size (payers, participants).
func NewTokenBucket(src RedisSource, opts ...LimitOption) (*TokenBucket, error) {
	cfg, err := newLimitConfig("token_bucket", "limit:tb:", opts)
	if err != nil {
		return nil, err
	}
	base, err := newLimitBase(cfg, src)
	if err != nil {
		return nil, err
	}
	return &TokenBucket{src: src, cfg: cfg, base: base, local: newLocalTokenBucket(cfg), prefix: cfg.prefix}, nil
}

// Check reports whether key's bucket holds at least min tokens (1 for a DICT lookup), changing nothing.
// When it does not, RetryAfter is the time until it will.
func (b *TokenBucket) Check(ctx context.Context, key string, p BucketParams, min float64) (Decision, error) {
	d, err := b.run(ctx, key, p, "check", min)
	if err == nil {
		b.base.counters.decided(d.Allowed)
	}
	return d, err
}

// Take deducts cost when the bucket holds at least cost tokens, and refuses (deducting nothing)
// otherwise. Concurrent Takes never overdraw: the script is atomic.
func (b *TokenBucket) Take(ctx context.Context, key string, p BucketParams, cost float64) (Decision, error) {
	d, err := b.run(ctx, key, p, "take", cost)
	if err == nil {
		b.base.counters.decided(d.Allowed)
	}
	return d, err
}

// Charge deducts cost unconditionally: the balance may go below zero, and the bucket then needs the time
// to refill the debt before a lookup is admitted again. Decision.Allowed reports whether at least one
// token is left, and RetryAfter the time until there is.
func (b *TokenBucket) Charge(ctx context.Context, key string, p BucketParams, cost float64) (Decision, error) {
	return b.run(ctx, key, p, "charge", cost)
}

// Credit adds amount (a payment sent after a lookup), up to the capacity.
func (b *TokenBucket) Credit(ctx context.Context, key string, p BucketParams, amount float64) (Decision, error) {
	return b.run(ctx, key, p, "credit", amount)
}

func (b *TokenBucket) run(ctx context.Context, key string, p BucketParams, op string, amount float64) (Decision, error) {
	if err := p.validate(); err != nil {
		return Decision{}, err
	}
	if err := tbAmount(p, op, amount, op == "check" || op == "take"); err != nil {
		return Decision{}, err
	}
	return limitRun(ctx, b.base,
		func(ctx context.Context) (Decision, error) { return b.redis(ctx, key, p, op, amount) },
		func() Decision { return b.local.apply(key, p, op, amount) })
}

func (b *TokenBucket) redis(ctx context.Context, key string, p BucketParams, op string, amount float64) (Decision, error) {
	args := []string{
		strconv.FormatFloat(p.Capacity, 'g', -1, 64),
		strconv.FormatFloat(p.RefillTokens, 'g', -1, 64),
		strconv.FormatInt(p.RefillPeriod.Milliseconds(), 10),
		op,
		strconv.FormatFloat(amount, 'g', -1, 64),
		b.cfg.limitNowMS(),
	}
	r, err := b.src.Rueidis()
	if err != nil {
		return Decision{}, err
	}
	vals, err := tbScript.Exec(ctx, r, []string{limitKey(b.prefix, key)}, args).ToArray()
	if err != nil {
		return Decision{}, err
	}
	if len(vals) != 3 {
		return Decision{}, fmt.Errorf("cachelayer: token bucket script returned %d values, want 3", len(vals))
	}
	allowed, err := vals[0].AsInt64()
	if err != nil {
		return Decision{}, fmt.Errorf("cachelayer: token bucket script: %w", err)
	}
	balance, err := vals[1].AsFloat64()
	if err != nil {
		return Decision{}, fmt.Errorf("cachelayer: token bucket script: %w", err)
	}
	retry, err := vals[2].AsInt64()
	if err != nil {
		return Decision{}, fmt.Errorf("cachelayer: token bucket script: %w", err)
	}
	return Decision{Allowed: allowed == 1, Balance: balance, RetryAfter: time.Duration(retry) * time.Millisecond}, nil
}
