package cachelayer_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// The Redis-down tests stop and start their own Redis on this port (never the shared one on 6379), with
// scripts/deps.sh; limitOutageMu serializes them.
const limitOutagePort = "6392"

var limitOutageMu sync.Mutex

func limitDeps(t *testing.T, action string) {
	t.Helper()
	cmd := exec.Command("../scripts/deps.sh", action, "redis")
	cmd.Env = append(cmd.Environ(), "DEPS_REDIS_PORT="+limitOutagePort)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("DEPS_REDIS_PORT=%s scripts/deps.sh %s redis: %v\n%s", limitOutagePort, action, err, out)
	}
}

// limitOutageKind is one limiter kind under test: decide makes one decision on key; stored reports
// whether key's state is in Redis.
type limitOutageKind struct {
	name   string
	decide func(ctx context.Context, key string) (bool, error)
	stored func(ctx context.Context, key string) bool
}

// Each limiter kind (token bucket, sliding window, GCRA on go-redis and on rueidis), with Redis up, then down, then up again: while it is down the decisions come from
// the in-process twin with the same parameters (3 allowed, the 4th refused, on a key Redis had already
// exhausted) and rate_limit_fallbacks_total counts each; once it is back, a probe finds it and the
// decisions are Redis's again (the state is in Redis, the fallback counter stands still).
func TestLimitersFallBackWhileRedisIsDownAndRecover(t *testing.T) {
	t.Parallel()
	limitOutageMu.Lock()
	defer limitOutageMu.Unlock()
	limitDeps(t, "up")
	t.Cleanup(func() { limitDeps(t, "down") })

	url := "redis://127.0.0.1:" + limitOutagePort + "/0"
	r := limitRedis(t, url)
	rdb := limitGCRAClient(t, url)
	reg := prometheus.NewRegistry()
	clock := newLimitClock()
	opts := func(name string) []cachelayer.LimitOption {
		return []cachelayer.LimitOption{
			cachelayer.WithLimitName(name), cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitClock(clock.Now),
			cachelayer.WithLimitProbeInterval(100 * time.Millisecond), cachelayer.WithLimitTimeout(2 * time.Second),
		}
	}
	tb, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r), opts("tb")...)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := cachelayer.NewSlidingWindow(cachelayer.FixedRedis(r), 3, time.Minute, opts("sw")...)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := cachelayer.NewIPRateLimiter(rdb, cachelayer.RateLimit{Rate: 3, Burst: 3, Period: time.Hour}, opts("ip")...)
	if err != nil {
		t.Fatal(err)
	}
	account, err := cachelayer.NewAccountRateLimiter(cachelayer.NewRueidisScripter(cachelayer.FixedRedis(r)), cachelayer.RateLimit{Rate: 3, Burst: 3, Period: time.Hour}, opts("account")...)
	if err != nil {
		t.Fatal(err)
	}
	exists := func(ctx context.Context, key string) bool {
		n, err := r.Do(ctx, r.B().Exists().Key(key).Build()).AsInt64()
		return err == nil && n == 1
	}
	p := cachelayer.BucketParams{Capacity: 3, RefillTokens: 3, RefillPeriod: time.Hour}
	kinds := []limitOutageKind{
		{"tb",
			func(ctx context.Context, key string) (bool, error) {
				d, err := tb.Take(ctx, key, p, 1)
				return d.Allowed, err
			},
			func(ctx context.Context, key string) bool { return exists(ctx, "limit:tb:{"+key+"}") }},
		{"sw",
			sw.Allow,
			func(ctx context.Context, key string) bool { return exists(ctx, "limit:sw:{"+key+"}") }},
		{"ip",
			ip.Allow,
			func(ctx context.Context, key string) bool { return exists(ctx, "rate:limit:ip:{"+key+"}") }},
		{"account",
			account.Allow,
			func(ctx context.Context, key string) bool { return exists(ctx, "rate:limit:account:{"+key+"}") }},
	}
	ctx := context.Background()
	fallbacks := func(name string) float64 {
		return limitMetric(t, reg, "rate_limit_fallbacks_total", map[string]string{"limiter": name})
	}
	// fourDecisions makes 4 decisions on key: 3 allowed and the 4th refused, from wherever they come.
	fourDecisions := func(t *testing.T, k limitOutageKind, key string) {
		t.Helper()
		var got []bool
		for range 4 {
			ok, err := k.decide(ctx, key)
			if err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
			got = append(got, ok)
		}
		if diff := cmp.Diff([]bool{true, true, true, false}, got); diff != "" {
			t.Errorf("%s: 4 decisions at 3 per hour mismatch (-want +got):\n%s", k.name, diff)
		}
	}

	exhausted := limitTestKey(t, "exhausted")
	t.Run("up", func(t *testing.T) {
		for _, k := range kinds {
			fourDecisions(t, k, exhausted)
			if !k.stored(ctx, exhausted) {
				t.Errorf("%s: no state in Redis after 4 decisions", k.name)
			}
			if got := fallbacks(k.name); got != 0 {
				t.Errorf("%s: rate_limit_fallbacks_total = %v with Redis up, want 0", k.name, got)
			}
		}
	})
	if t.Failed() {
		return
	}

	limitDeps(t, "down")
	t.Run("down", func(t *testing.T) {
		for _, k := range kinds {
			// Redis had refused this key; the twin starts with it full, and applies the same limit.
			fourDecisions(t, k, exhausted)
			if got := fallbacks(k.name); got != 4 {
				t.Errorf("%s: rate_limit_fallbacks_total = %v after 4 decisions with Redis down, want 4", k.name, got)
			}
		}
		// Charges and credits fall back too, with the bucket's arithmetic (the twin's bucket is empty now).
		d, err := tb.Charge(ctx, exhausted, p, 20)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tbDecision(false, -20, 21*20*time.Minute), d); diff != "" {
			t.Errorf("Charge with Redis down mismatch (-want +got):\n%s", diff)
		}
	})

	limitDeps(t, "up")
	t.Run("recovered", func(t *testing.T) {
		// Within a few probe intervals the decisions are Redis's again: the same answers, with the state in
		// Redis and no fallback. A probe that succeeds proves one connection; the client's other pipelined
		// connections may each fail once more before they reconnect, so this is checked until it holds.
		for _, k := range kinds {
			deadline := time.Now().Add(15 * time.Second)
			for attempt := 0; ; attempt++ {
				before := fallbacks(k.name)
				key := limitTestKey(t, "fresh-"+strconv.Itoa(attempt))
				var got []bool
				for range 4 {
					ok, err := k.decide(ctx, key)
					if err != nil {
						t.Fatalf("%s: %v", k.name, err)
					}
					got = append(got, ok)
				}
				after := fallbacks(k.name)
				if cmp.Equal([]bool{true, true, true, false}, got) && k.stored(ctx, key) && after == before {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: Redis has been back for 15s and the decisions are still not Redis's: %v, stored in Redis %v, fallbacks %v -> %v",
						k.name, got, k.stored(ctx, key), before, after)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
}

// The cache client is a RedisSource: the limiters can be built on it, even before Redis answers.
var _ cachelayer.RedisSource = (*cachelayer.Client)(nil)

// limitSwitchedSource is a RedisSource that is unavailable while down is set (as the cache client is
// before it first connects, or after a failure), and records the failures reported to it.
type limitSwitchedSource struct {
	r      rueidis.Client
	down   atomic.Bool
	failed atomic.Int64
}

var errLimitSourceDown = errors.New("test source: Redis unavailable")

func (s *limitSwitchedSource) Rueidis() (rueidis.Client, error) {
	if s.down.Load() {
		return nil, errLimitSourceDown
	}
	return s.r, nil
}

func (s *limitSwitchedSource) Failed(ctx context.Context, err error) bool {
	s.failed.Add(1)
	return true
}

// A limiter built while its source has no Redis decides in process, tells the source, and moves to Redis
// by itself once the source hands out a client.
func TestLimiterOnASourceThatStartsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := limitRedis(t, "")
	src := &limitSwitchedSource{r: r}
	src.down.Store(true)
	reg := prometheus.NewRegistry()
	clock := newLimitClock()
	b, err := cachelayer.NewTokenBucket(src, cachelayer.WithLimitName("tb"), cachelayer.WithLimitRegisterer(reg),
		cachelayer.WithLimitClock(clock.Now), cachelayer.WithLimitProbeInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := cachelayer.BucketParams{Capacity: 2, RefillTokens: 2, RefillPeriod: time.Hour}
	key := limitTestKey(t, "k")
	redisKey := "limit:tb:{" + key + "}"
	var got []bool
	for range 3 {
		d, err := b.Take(ctx, key, p, 1)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Allowed)
	}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Errorf("3 Takes of 2 tokens without Redis mismatch (-want +got):\n%s", diff)
	}
	if n := limitMetric(t, reg, "rate_limit_fallbacks_total", map[string]string{"limiter": "tb"}); n != 3 {
		t.Errorf("rate_limit_fallbacks_total = %v, want 3", n)
	}
	if n := src.failed.Load(); n < 1 {
		t.Errorf("the source was told of %d failures, want at least 1", n)
	}
	if n, err := r.Do(ctx, r.B().Exists().Key(redisKey).Build()).AsInt64(); err != nil || n != 0 {
		t.Fatalf("EXISTS %s = %d, %v; want 0 while the source is down", redisKey, n, err)
	}

	src.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Take(ctx, key, p, 1); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Do(ctx, r.B().Exists().Key(redisKey).Build()).AsInt64(); err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source has handed out a client for 5s and the limiter still decides in process")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
