package cachelayer_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// limitMetric returns the value of the counter or gauge name with exactly these labels in reg (0 when it
// has no such series yet).
func limitMetric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if !maps.Equal(labels, got) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// Several limiters share one registry; decisions are counted by limiter and outcome, charges and credits
// are not requests, and the gauge counts the limiter instances.
func TestLimitMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := limitRedis(t, "")
	reg := prometheus.NewRegistry()
	clock := newLimitClock()
	opts := []cachelayer.LimitOption{cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitClock(clock.Now)}
	tb, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r), append(opts, cachelayer.WithLimitName("payer"))...)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := cachelayer.NewSlidingWindow(cachelayer.FixedRedis(r), 1, time.Minute, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cachelayer.NewLocalTokenBucket(opts...); err != nil {
		t.Fatal(err)
	}
	p := cachelayer.BucketParams{Capacity: 2, RefillTokens: 1, RefillPeriod: time.Hour}
	key := limitTestKey(t, "k")
	for range 3 {
		if _, err := tb.Take(ctx, key, p, 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, do := range []func() error{
		func() error { _, err := tb.Check(ctx, key, p, 1); return err },
		func() error { _, err := tb.Charge(ctx, key, p, 1); return err },
		func() error { _, err := tb.Credit(ctx, key, p, 1); return err },
		func() error { _, err := sw.Allow(ctx, key); return err },
		func() error { _, err := sw.Allow(ctx, key); return err },
		func() error { _, err := sw.Count(ctx, key); return err },
	} {
		if err := do(); err != nil {
			t.Fatal(err)
		}
	}
	for _, test := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rate_limit_requests_total", map[string]string{"limiter": "payer", "allowed": "true"}, 2},
		{"rate_limit_requests_total", map[string]string{"limiter": "payer", "allowed": "false"}, 2}, // the third Take and the Check
		{"rate_limit_requests_total", map[string]string{"limiter": "sliding_window", "allowed": "true"}, 1},
		{"rate_limit_requests_total", map[string]string{"limiter": "sliding_window", "allowed": "false"}, 1},
		{"rate_limit_fallbacks_total", map[string]string{"limiter": "payer"}, 0},
		{"rate_limit_active_limiters", nil, 3},
	} {
		if got := limitMetric(t, reg, test.name, test.labels); got != test.want {
			t.Errorf("%s%v = %v, want %v", test.name, test.labels, got, test.want)
		}
	}
}
