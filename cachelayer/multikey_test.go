package cachelayer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// IP and account together (the seed's multi-key limiter; here one on go-redis, one on rueidis): a request
// passes only when both allow, and a refusal by one charges neither.
func TestMultiKeyLimiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := limitGCRAClient(t, "")
	ip, err := cachelayer.NewIPRateLimiter(rdb, cachelayer.RateLimit{Rate: 2, Burst: 2, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	account, err := cachelayer.NewAccountRateLimiter(cachelayer.NewRueidisScripter(cachelayer.FixedRedis(limitRedis(t, ""))), cachelayer.RateLimit{Rate: 3, Burst: 3, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	multi, err := cachelayer.NewMultiKeyLimiter([]cachelayer.KeyedLimiter{ip, account})
	if err != nil {
		t.Fatal(err)
	}
	ipA, ipB, ipC, acct := limitTestKey(t, "ipA"), limitTestKey(t, "ipB"), limitTestKey(t, "ipC"), limitTestKey(t, "acct")

	allow := func(ipKey string) bool {
		t.Helper()
		ok, err := multi.Allow(ctx, ipKey, acct)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	peek := func(l cachelayer.KeyedLimiter, key string) bool {
		t.Helper()
		d, err := l.Peek(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}

	got := []bool{allow(ipA), allow(ipA), allow(ipA)}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Errorf("three requests from ipA (2 per hour) mismatch (-want +got):\n%s", diff)
	}
	if !peek(account, acct) {
		t.Errorf("the account was charged for the request the IP limiter refused: it has no request left, want one")
	}
	if !allow(ipB) {
		t.Errorf("ipB's first request (the account's third) was refused")
	}
	d, err := multi.Decide(ctx, ipC, acct)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.RetryAfter <= 19*time.Minute {
		t.Errorf("ipC with an exhausted account = %+v, want refused with about 20m to wait", d)
	}
	if n, err := rdb.Exists(ctx, "rate:limit:ip:{"+ipC+"}").Result(); err != nil || n != 0 {
		t.Errorf("ipC's key exists (%d, %v): the IP limiter was charged for a request the account limiter refused", n, err)
	}
	if _, err := multi.Allow(ctx, ipA); !errors.Is(err, cachelayer.ErrLimitParams) {
		t.Errorf("Allow with one key for two limiters: err = %v, want ErrLimitParams", err)
	}
}

// The limiters may be of any kind (here in-process ones, on a test clock): all must allow.
func TestMultiKeyLimiterMixedKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newLimitClock()
	window, err := cachelayer.NewLocalSlidingWindow(1, time.Minute, cachelayer.WithLimitClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	rate, err := cachelayer.NewLocalRateLimiter(cachelayer.RateLimit{Rate: 2, Burst: 2, Period: time.Minute}, cachelayer.WithLimitClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	multi, err := cachelayer.NewMultiKeyLimiter([]cachelayer.KeyedLimiter{window, rate})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []struct {
		at        time.Duration
		windowKey string
		want      cachelayer.Decision
	}{
		{0, "a", tbDecision(true, 0, 0)},
		{0, "a", tbDecision(false, 0, time.Minute)},    // the window refuses; the rate limiter is not charged
		{0, "b", tbDecision(true, 0, 0)},               // so it still has its second request
		{0, "c", tbDecision(false, 0, 30*time.Second)}, // now the rate limiter refuses
		{time.Minute, "a", tbDecision(true, 0, 0)},
	} {
		clock.set(s.at)
		got, err := multi.Decide(ctx, s.windowKey, "rate")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("step %d (%s at %v) mismatch (-want +got):\n%s", i, s.windowKey, s.at, diff)
		}
	}
}
