package cachelayer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// limitGCRAClient returns the go-redis client redis_rate runs on, or fails the test saying how to start
// Redis.
func limitGCRAClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	if url == "" {
		url = limitRedisURL()
	}
	c, err := cachelayer.NewGCRAClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, "*limit-test:"+limitGlobEscape(t.Name())+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis is not reachable at %s (%v): start the local services with `scripts/deps.sh up`", url, err)
	}
	return c
}

// The per-IP and per-account limiters, on redis_rate and the server's clock, through a go-redis client
// and through rueidis: 3 per hour (one every 20 minutes, so nothing comes back during the test), per key.
func TestRateLimiters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := limitGCRAClient(t, "")
	limit := cachelayer.RateLimit{Rate: 3, Burst: 3, Period: time.Hour}
	for _, backend := range []struct {
		name string
		s    cachelayer.GCRAScripter
	}{
		{"go-redis", rdb},
		{"rueidis", cachelayer.NewRueidisScripter(cachelayer.FixedRedis(limitRedis(t, "")))},
	} {
		ip, err := cachelayer.NewIPRateLimiter(backend.s, limit)
		if err != nil {
			t.Fatal(err)
		}
		account, err := cachelayer.NewAccountRateLimiter(backend.s, limit)
		if err != nil {
			t.Fatal(err)
		}
		for _, test := range []struct {
			name   string
			l      *cachelayer.RateLimiter
			prefix string // of the Redis key: redis_rate's, then the limiter's
		}{
			{"ip", ip.RateLimiter, "rate:limit:ip:"},
			{"account", account.RateLimiter, "rate:limit:account:"},
		} {
			t.Run(backend.name+"/"+test.name, func(t *testing.T) {
				t.Parallel()
				key, other := limitTestKey(t, "a"), limitTestKey(t, "b")
				var got []bool
				var last cachelayer.Decision
				for range 4 {
					d, err := test.l.Decide(ctx, key)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, d.Allowed)
					last = d
				}
				if diff := cmp.Diff([]bool{true, true, true, false}, got); diff != "" {
					t.Errorf("4 requests at 3 per hour mismatch (-want +got):\n%s", diff)
				}
				if last.RetryAfter <= 19*time.Minute || last.RetryAfter > 20*time.Minute {
					t.Errorf("refusal's RetryAfter = %v, want just under 20m (one emission interval)", last.RetryAfter)
				}
				peek, err := test.l.Peek(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if peek.Allowed || peek.RetryAfter <= 19*time.Minute {
					t.Errorf("Peek of the exhausted key = %+v, want refused with about 20m to wait", peek)
				}
				if ok, err := test.l.Allow(ctx, other); err != nil || !ok {
					t.Errorf("Allow(another key) = %v, %v; want true: limits are per key", ok, err)
				}
				redisKey := test.prefix + "{" + key + "}"
				if n, err := rdb.Exists(ctx, redisKey).Result(); err != nil || n != 1 {
					t.Errorf("EXISTS %s = %d, %v; want 1", redisKey, n, err)
				}
			})
		}
	}
}

// The rueidis scripter answers as go-redis would: values, redis.Nil, and error replies that go-redis
// recognises (NOSCRIPT makes redis_rate fall back from EVALSHA to EVAL).
func TestRueidisScripter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := cachelayer.NewRueidisScripter(cachelayer.FixedRedis(limitRedis(t, "")))
	key := limitTestKey(t, "k")
	const script = "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60) return {ARGV[1], tonumber(ARGV[2]), ARGV[3]}"
	sha, err := s.ScriptLoad(ctx, script).Result()
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.EvalSha(ctx, sha, []string{key}, "x", 42, 0.25).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{"x", int64(42), "0.25"}, v); diff != "" {
		t.Errorf("EVALSHA reply mismatch (-want +got):\n%s", diff)
	}
	exists, err := s.ScriptExists(ctx, sha, "0000000000000000000000000000000000000000").Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{true, false}, exists); diff != "" {
		t.Errorf("SCRIPT EXISTS mismatch (-want +got):\n%s", diff)
	}
	if err := s.EvalSha(ctx, "0000000000000000000000000000000000000000", []string{key}).Err(); !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Errorf("EVALSHA of an unknown script: err = %v, want a go-redis NOSCRIPT error", err)
	}
	if err := s.Eval(ctx, "return false", []string{key}).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("EVAL returning nil: err = %v, want redis.Nil", err)
	}
	if n, err := s.Del(ctx, key).Result(); err != nil || n != 1 {
		t.Errorf("DEL = %d, %v; want 1", n, err)
	}
}

// The in-process GCRA, on a test clock: 2 per second with a burst of 2, the arithmetic of redis_rate.
func TestLocalRateLimiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newLimitClock()
	l, err := cachelayer.NewLocalRateLimiter(cachelayer.RateLimit{Rate: 2, Burst: 2, Period: time.Second}, cachelayer.WithLimitClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	key := limitTestKey(t, "ip")
	for i, s := range []struct {
		at   time.Duration
		peek bool
		want cachelayer.Decision
	}{
		{0, false, tbDecision(true, 1, 0)},
		{0, false, tbDecision(true, 0, 0)},
		{0, false, tbDecision(false, 0, 500*time.Millisecond)},
		{0, true, tbDecision(false, 0, 500*time.Millisecond)},
		{500 * time.Millisecond, true, tbDecision(true, 1, 0)},
		{500 * time.Millisecond, false, tbDecision(true, 0, 0)},
		{2 * time.Second, true, tbDecision(true, 2, 0)},
	} {
		clock.set(s.at)
		do := l.Decide
		if s.peek {
			do = l.Peek
		}
		got, err := do(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("step %d (peek %v at %v) mismatch (-want +got):\n%s", i, s.peek, s.at, diff)
		}
	}
}

func TestRateLimiterInvalidLimits(t *testing.T) {
	t.Parallel()
	rdb := limitGCRAClient(t, "")
	for _, limit := range []cachelayer.RateLimit{
		{Rate: 0, Burst: 1, Period: time.Second},
		{Rate: 1, Burst: 0, Period: time.Second},
		{Rate: 1, Burst: 1},
	} {
		if _, err := cachelayer.NewRateLimiter(rdb, limit); !errors.Is(err, cachelayer.ErrLimitParams) {
			t.Errorf("NewRateLimiter(%+v): err = %v, want ErrLimitParams", limit, err)
		}
		if _, err := cachelayer.NewLocalRateLimiter(limit); !errors.Is(err, cachelayer.ErrLimitParams) {
			t.Errorf("NewLocalRateLimiter(%+v): err = %v, want ErrLimitParams", limit, err)
		}
	}
}
