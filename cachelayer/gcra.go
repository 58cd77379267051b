package cachelayer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/redis/rueidis"
)

// RateLimit is a GCRA request rate: Rate requests per Period on average, up to Burst at once.
type RateLimit struct {
	Rate   int
	Burst  int
	Period time.Duration
}

// RatePerSecond is n requests per second with a burst of n.
func RatePerSecond(n int) RateLimit { return RateLimit{Rate: n, Burst: n, Period: time.Second} }

func (l RateLimit) validate() error {
	if l.Rate < 1 || l.Burst < 1 || l.Period <= 0 {
		return fmt.Errorf("%w: rate %+v: rate and burst must be at least 1 and the period positive", ErrLimitParams, l)
	}
	return nil
}

// NewGCRAClient builds a go-redis client for redis_rate from the same REDIS_URL as the rueidis client
// (redis:// or rediss://). Retries are off (a retried script could count a request twice; the limiter
// falls back instead) and so are maintenance notifications, which Redis 7.0 does not know. go-redis is
// used for redis_rate only: through this client, or only for its command types with
// [NewRueidisScripter], which is faster (see [GCRAScripter]).
func NewGCRAClient(redisURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("cachelayer: REDIS_URL for the GCRA limiters: %w", err)
	}
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opt), nil
}

// GCRAScripter is what redis_rate needs from a Redis client: go-redis's scripting commands and Del. A
// go-redis client ([NewGCRAClient]) is one. [NewRueidisScripter] makes one of the rueidis client, so the
// GCRA scripts share its auto-pipelined connections instead of taking a pooled connection (two system
// calls on each side) per request: with 32 callers on 2 cores, about 1.5 times the decisions per
// second (limit_bench_test.go).
type GCRAScripter interface {
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
}

// NewRueidisScripter runs redis_rate's commands on the Redis of src: the arguments are encoded as go-redis would, and
// the replies handed back in go-redis's command types (error replies as [redis.Error], so that
// go-redis's EVALSHA-then-EVAL fallback still works).
func NewRueidisScripter(src RedisSource) GCRAScripter { return gcraRueidis{src} }

type gcraRueidis struct{ src RedisSource }

// gcraReplyError is a Redis error reply, as go-redis would report it.
type gcraReplyError struct{ msg string }

func (e gcraReplyError) Error() string { return e.msg }
func (gcraReplyError) RedisError()     {}

func gcraErr(err error) error {
	if rueidis.IsRedisNil(err) {
		return redis.Nil
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		return gcraReplyError{re.Error()}
	}
	return err
}

// gcraArgs encodes arguments as go-redis does (floats in 'f' format, shortest exact).
func gcraArgs(args []any) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = v
		case []byte:
			out[i] = string(v)
		case int:
			out[i] = strconv.Itoa(v)
		case int64:
			out[i] = strconv.FormatInt(v, 10)
		case float64:
			out[i] = strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			out[i] = "0"
			if v {
				out[i] = "1"
			}
		default:
			out[i] = fmt.Sprint(v)
		}
	}
	return out
}

// do runs the command build makes, on the client src hands out now.
func (g gcraRueidis) do(ctx context.Context, build func(b rueidis.Builder) rueidis.Completed) rueidis.RedisResult {
	r, err := g.src.Rueidis()
	if err != nil {
		return rueidis.NewErrorResult(err)
	}
	return r.Do(ctx, build(r.B()))
}

func (g gcraRueidis) eval(ctx context.Context, build func(b rueidis.Builder) rueidis.Completed) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	v, err := g.do(ctx, build).ToAny()
	if err != nil {
		cmd.SetErr(gcraErr(err))
	} else {
		cmd.SetVal(v)
	}
	return cmd
}

func (g gcraRueidis) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return g.eval(ctx, func(b rueidis.Builder) rueidis.Completed {
		return b.Eval().Script(script).Numkeys(int64(len(keys))).Key(keys...).Arg(gcraArgs(args)...).Build()
	})
}

func (g gcraRueidis) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return g.eval(ctx, func(b rueidis.Builder) rueidis.Completed {
		return b.Evalsha().Sha1(sha1).Numkeys(int64(len(keys))).Key(keys...).Arg(gcraArgs(args)...).Build()
	})
}

func (g gcraRueidis) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return g.eval(ctx, func(b rueidis.Builder) rueidis.Completed {
		return b.EvalRo().Script(script).Numkeys(int64(len(keys))).Key(keys...).Arg(gcraArgs(args)...).Build()
	})
}

func (g gcraRueidis) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return g.eval(ctx, func(b rueidis.Builder) rueidis.Completed {
		return b.EvalshaRo().Sha1(sha1).Numkeys(int64(len(keys))).Key(keys...).Arg(gcraArgs(args)...).Build()
	})
}

func (g gcraRueidis) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	cmd := redis.NewBoolSliceCmd(ctx)
	ns, err := g.do(ctx, func(b rueidis.Builder) rueidis.Completed { return b.ScriptExists().Sha1(hashes...).Build() }).AsIntSlice()
	if err != nil {
		cmd.SetErr(gcraErr(err))
		return cmd
	}
	exists := make([]bool, len(ns))
	for i, n := range ns {
		exists[i] = n == 1
	}
	cmd.SetVal(exists)
	return cmd
}

func (g gcraRueidis) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	cmd := redis.NewStringCmd(ctx)
	sha, err := g.do(ctx, func(b rueidis.Builder) rueidis.Completed { return b.ScriptLoad().Script(script).Build() }).ToString()
	if err != nil {
		cmd.SetErr(gcraErr(err))
	} else {
		cmd.SetVal(sha)
	}
	return cmd
}

func (g gcraRueidis) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	cmd := redis.NewIntCmd(ctx)
	n, err := g.do(ctx, func(b rueidis.Builder) rueidis.Completed { return b.Del().Key(keys...).Build() }).AsInt64()
	if err != nil {
		cmd.SetErr(gcraErr(err))
	} else {
		cmd.SetVal(n)
	}
	return cmd
}

// RateLimiter limits a key's request rate with GCRA (the generic cell rate algorithm) through
// github.com/go-redis/redis_rate: one Redis string per key holding its theoretical arrival time, on the
// Redis server's clock. While Redis is unavailable it decides with a [LocalRateLimiter] of the same
// limit (see localbucket.go).
type RateLimiter struct {
	rl     *redis_rate.Limiter
	limit  redis_rate.Limit
	prefix string
	base   *limitBase
	local  *LocalRateLimiter
}

// NewRateLimiter returns a GCRA limiter of limit on rdb (a go-redis client from [NewGCRAClient], or
// [NewRueidisScripter]).
func NewRateLimiter(rdb GCRAScripter, limit RateLimit, opts ...LimitOption) (*RateLimiter, error) {
	return newRateLimiter(rdb, limit, "rate", "limit:rate:", opts)
}

func newRateLimiter(rdb GCRAScripter, limit RateLimit, name, prefix string, opts []LimitOption) (*RateLimiter, error) {
	cfg, err := newLimitConfig(name, prefix, opts)
	if err != nil {
		return nil, err
	}
	if err := limit.validate(); err != nil {
		return nil, err
	}
	base, err := newLimitBase(cfg, rdb)
	if err != nil {
		return nil, err
	}
	return &RateLimiter{
		rl:     redis_rate.NewLimiter(rdb),
		limit:  redis_rate.Limit{Rate: limit.Rate, Burst: limit.Burst, Period: limit.Period},
		prefix: cfg.prefix, base: base, local: newLocalRateLimiter(limit, cfg),
	}, nil
}

// Allow counts a request of key and reports whether it is within the rate. A refused request is not
// counted.
func (l *RateLimiter) Allow(ctx context.Context, key string) (bool, error) {
	d, err := l.Decide(ctx, key)
	return d.Allowed, err
}

// Decide is [RateLimiter.Allow] with the details: Balance is the number of requests that could still
// happen at once, RetryAfter (when refused) the time until one can.
func (l *RateLimiter) Decide(ctx context.Context, key string) (Decision, error) {
	d, err := limitRun(ctx, l.base,
		func(ctx context.Context) (Decision, error) {
			res, err := l.rl.Allow(ctx, limitKey(l.prefix, key), l.limit)
			if err != nil {
				return Decision{}, err
			}
			return gcraDecision(res), nil
		},
		func() Decision { return l.local.apply(key, true) })
	if err == nil {
		l.base.counters.decided(d.Allowed)
	}
	return d, err
}

// Peek reports whether Allow would allow a request of key now, counting nothing. It is redis_rate's
// AllowAtMost with n = 0, which only rewrites the stored arrival time with the same value.
func (l *RateLimiter) Peek(ctx context.Context, key string) (Decision, error) {
	return limitRun(ctx, l.base,
		func(ctx context.Context) (Decision, error) {
			res, err := l.rl.AllowAtMost(ctx, limitKey(l.prefix, key), l.limit, 0)
			if err != nil {
				return Decision{}, err
			}
			// Nothing is taken, so Allowed is 0 either way: a refusal shows as a retry-after.
			if res.RetryAfter < 0 {
				return Decision{Allowed: true, Balance: float64(res.Remaining)}, nil
			}
			return Decision{Balance: float64(res.Remaining), RetryAfter: res.RetryAfter}, nil
		},
		func() Decision { return l.local.apply(key, false) })
}

func gcraDecision(res *redis_rate.Result) Decision {
	d := Decision{Allowed: res.Allowed > 0, Balance: float64(res.Remaining)}
	if !d.Allowed {
		d.RetryAfter = res.RetryAfter
	}
	return d
}

// IPRateLimiter limits requests per client IP address (the seed's IP limiter).
type IPRateLimiter struct{ *RateLimiter }

// NewIPRateLimiter returns a per-IP GCRA limiter (name label ip, keys limit:ip:{address}).
func NewIPRateLimiter(rdb GCRAScripter, limit RateLimit, opts ...LimitOption) (*IPRateLimiter, error) {
	l, err := newRateLimiter(rdb, limit, "ip", "limit:ip:", opts)
	if err != nil {
		return nil, err
	}
	return &IPRateLimiter{l}, nil
}

// AccountRateLimiter limits requests per account (the seed's account limiter; the caller chooses what
// identifies an account, e.g. participant+branch+number+type).
type AccountRateLimiter struct{ *RateLimiter }

// NewAccountRateLimiter returns a per-account GCRA limiter (name label account, keys
// limit:account:{account}).
func NewAccountRateLimiter(rdb GCRAScripter, limit RateLimit, opts ...LimitOption) (*AccountRateLimiter, error) {
	l, err := newRateLimiter(rdb, limit, "account", "limit:account:", opts)
	if err != nil {
		return nil, err
	}
	return &AccountRateLimiter{l}, nil
}
