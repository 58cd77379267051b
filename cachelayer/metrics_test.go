package cachelayer_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// Two clients share one registry; the connection gauges count their open connections, active while they
// carry commands and idle once they carry only keep-alive PINGs.
func TestMetricsConnections(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := clClient(t, redisURL(), cachelayer.WithRegisterer(reg))
	b := clClient(t, redisURL(), cachelayer.WithRegisterer(reg))
	ctx := context.Background()
	for _, c := range []*cachelayer.Client{a, b} {
		rc := clRueidis(t, c)
		if err := rc.Do(ctx, rc.B().Ping().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	active := clMetric(t, reg, "redis_connections_active", nil)
	idle := clMetric(t, reg, "redis_connections_idle", nil)
	if active < 2 {
		t.Errorf("redis_connections_active = %v right after both clients sent a command, want at least 2", active)
	}
	open := active + idle
	deadline := time.Now().Add(5 * time.Second)
	for clMetric(t, reg, "redis_connections_active", nil) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections still active 5 s after the last command (keep-alive PINGs counted as commands?)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := clMetric(t, reg, "redis_connections_idle", nil); got != open {
		t.Errorf("redis_connections_idle = %v once quiet, want all %v open connections", got, open)
	}
	b.Close()
	openNow := func() float64 {
		return clMetric(t, reg, "redis_connections_active", nil) + clMetric(t, reg, "redis_connections_idle", nil)
	}
	for deadline := time.Now().Add(2 * time.Second); openNow() >= open; {
		if time.Now().After(deadline) {
			t.Fatalf("open connections = %v 2 s after closing one client, want fewer than %v", openNow(), open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The operation histogram observes round trips, not client-side cache hits.
func TestMetricsOperationDurations(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := clClient(t, redisURL(), cachelayer.WithRegisterer(reg))
	store := newClStore()
	rt := cachelayer.NewReadThrough(c, clPrefix(t), store.load)
	ctx := context.Background()
	_ = store.set("k", 1, 1)(ctx)
	if _, err := rt.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"get", "lease", "fill"} {
		if n := clMetric(t, reg, "redis_operations_duration_seconds", map[string]string{"operation": op}); n != 1 {
			t.Errorf("redis_operations_duration_seconds{operation=%s} count = %v after one miss, want 1", op, n)
		}
	}
	local := func() float64 { return clMetric(t, reg, "redis_hits_total", map[string]string{"source": "local"}) }
	for deadline := time.Now().Add(2 * time.Second); local() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no client-side hit within 2 s")
		}
		if _, err := rt.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	gets := clMetric(t, reg, "redis_operations_duration_seconds", map[string]string{"operation": "get"})
	for range 50 {
		if _, err := rt.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if got := clMetric(t, reg, "redis_operations_duration_seconds", map[string]string{"operation": "get"}); got != gets {
		t.Errorf("50 client-side hits added %v get round trips, want 0", got-gets)
	}
}
