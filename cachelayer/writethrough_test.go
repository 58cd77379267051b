package cachelayer_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// wtStaleWindows runs rounds of: client a writes i to one key through a WriteThrough and at once reads it
// back through its ReadThrough, which must give i (never i-1: the writer never reads its old value);
// meanwhile client b, reading through its own client-side cache every 10 µs or so, records when it first
// sees i. It returns, per round, the time from a's write being acknowledged to b seeing i: the stale
// window, in which b still serves i-1 because Redis' invalidation has not reached it yet (it includes b's
// polling interval and the round trip of b's first read after the invalidation).
func wtStaleWindows(tb testing.TB, a, b *cachelayer.Client, rounds int, opts ...cachelayer.CacheOption) []time.Duration {
	tb.Helper()
	ctx := context.Background()
	prefix := clPrefix(tb)
	store := newClStore()
	wt := cachelayer.NewWriteThrough[int](a, prefix, opts...)
	readA := cachelayer.NewReadThrough(a, prefix, store.load, opts...)
	readB := cachelayer.NewReadThrough(b, prefix, store.load, opts...)
	if err := wt.Write(ctx, "k", 0, 0, store.set("k", 0, 0)); err != nil {
		tb.Fatal(err)
	}
	for range 3 {
		if v, err := readB.Get(ctx, "k"); err != nil || v != 0 {
			tb.Fatalf("b's first reads = (%d, %v), want 0", v, err)
		}
	}

	type seen struct {
		at  time.Time
		err error
	}
	start := make(chan int)
	result := make(chan seen, 1)
	defer close(start)
	go func() {
		for i := range start {
			deadline := time.Now().Add(2 * time.Second)
			for {
				v, err := readB.Get(ctx, "k")
				now := time.Now()
				if err == nil && v == i {
					result <- seen{at: now}
					break
				}
				if err == nil && v != i-1 {
					err = fmt.Errorf("b read %d while waiting for %d after %d", v, i, i-1)
				}
				if err == nil && now.After(deadline) {
					err = fmt.Errorf("b still reads %d two seconds after a wrote %d: no invalidation", v, i)
				}
				if err != nil {
					result <- seen{err: err}
					break
				}
				time.Sleep(10 * time.Microsecond) // poll, as a busy server would, without starving the connection readers
			}
		}
	}()

	windows := make([]time.Duration, 0, rounds)
	for i := 1; i <= rounds; i++ {
		start <- i
		if err := wt.Write(ctx, "k", i, int64(i), store.set("k", i, int64(i))); err != nil {
			tb.Fatalf("round %d: Write: %v", i, err)
		}
		acked := time.Now()
		if v, err := readA.Get(ctx, "k"); err != nil || v != i {
			tb.Fatalf("round %d: the writer read (%d, %v) right after writing %d: it must never read its old value", i, v, err, i)
		}
		r := <-result
		if r.err != nil {
			tb.Fatalf("round %d: %v", i, r.err)
		}
		windows = append(windows, max(0, r.at.Sub(acked)))
	}
	return windows
}

// wtPercentiles returns the p50, p99 and maximum of ds (nearest rank).
func wtPercentiles(ds []time.Duration) (p50, p99, maximum time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
	}
	return rank(0.50), rank(0.99), s[len(s)-1]
}

// A write through one client invalidates another client's cached copy, 1,000 times: the writer never
// reads its old value, and the other client sees the new one soon (the window is logged, not asserted:
// tests never assert wall time; BenchmarkStaleWindow reports it). Both with values decoded on every hit
// and with decoded values shared between hits.
func TestWriteThroughInvalidatesAnotherClient(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		name string
		opts []cachelayer.CacheOption
	}{
		{"decoded per hit", nil},
		{"shared values", []cachelayer.CacheOption{cachelayer.WithSharedValues()}},
	} {
		t.Run(test.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := clClient(t, redisURL(), cachelayer.WithRegisterer(reg))
			b := clClient(t, redisURL())
			windows := wtStaleWindows(t, a, b, 1000, test.opts...)
			p50, p99, maximum := wtPercentiles(windows)
			t.Logf("stale window of the other client over %d writes: p50 %v, p99 %v, max %v (goal: p99 under 5 ms)",
				len(windows), p50, p99, maximum)
			if n := clMetric(t, reg, "redis_invalidation_lag_seconds", nil); n == 0 {
				t.Errorf("redis_invalidation_lag_seconds observed nothing over 1,000 writes of a key the writer had cached")
			}
		})
	}
}

// wtRaw returns what Redis holds under key, as the strategies store it ("" when absent).
func wtRaw(t testing.TB, rc rueidis.Client, key string) string {
	t.Helper()
	v, err := rc.Do(context.Background(), rc.B().Get().Key(key).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// wtRawVersion returns the version of the value Redis holds under key, or a description of what else.
func wtRawVersion(t testing.TB, rc rueidis.Client, key string) string {
	t.Helper()
	raw := wtRaw(t, rc, key)
	switch {
	case raw == "":
		return "absent"
	case strings.HasPrefix(raw, "v") && len(raw) > 21:
		return "v" + strings.TrimLeft(raw[1:21], "0")
	case strings.HasPrefix(raw, "t"):
		return "tombstone"
	case strings.HasPrefix(raw, "l"):
		return "lease"
	}
	return "unknown " + raw
}

// The order of writes with Redis up: the store first, its error returned with the cache untouched; an
// older version never replaces a newer one.
func TestWriteThroughOrderOfWrites(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	type state struct {
		Err   string
		Read  int
		Redis string
		Store clRow
	}
	for _, test := range []struct {
		name  string
		steps func(wt *cachelayer.WriteThrough[int], store *clStore) error
		want  state
	}{
		{"store fails: error, cache untouched", func(wt *cachelayer.WriteThrough[int], store *clStore) error {
			store.setFail(true)
			defer store.setFail(false)
			return wt.Write(ctx, "k", 2, 2, store.set("k", 2, 2))
		}, state{Err: errClStoreDown.Error(), Read: 1, Redis: "v1", Store: clRow{1, 1}}},
		{"store then cache", func(wt *cachelayer.WriteThrough[int], store *clStore) error {
			return wt.Write(ctx, "k", 2, 2, store.set("k", 2, 2))
		}, state{Read: 2, Redis: "v2", Store: clRow{2, 2}}},
		{"an older version arriving late is refused", func(wt *cachelayer.WriteThrough[int], store *clStore) error {
			if err := wt.Write(ctx, "k", 3, 3, store.set("k", 3, 3)); err != nil {
				return err
			}
			return wt.Put(ctx, "k", 2, 2) // a slower writer of version 2
		}, state{Read: 3, Redis: "v3", Store: clRow{3, 3}}},
		{"a negative version is refused before the store", func(wt *cachelayer.WriteThrough[int], store *clStore) error {
			return wt.Write(ctx, "k", 9, -1, store.set("k", 9, -1))
		}, state{Err: cachelayer.ErrVersion.Error(), Read: 1, Redis: "v1", Store: clRow{1, 1}}},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			prefix := clPrefix(t)
			store := newClStore()
			wt := cachelayer.NewWriteThrough[int](c, prefix)
			rt := cachelayer.NewReadThrough(c, prefix, store.load)
			if err := wt.Write(ctx, "k", 1, 1, store.set("k", 1, 1)); err != nil {
				t.Fatal(err)
			}
			if v, err := rt.Get(ctx, "k"); err != nil || v != 1 {
				t.Fatalf("read before = (%d, %v), want 1", v, err)
			}
			var got state
			if err := test.steps(wt, store); err != nil {
				got.Err = err.Error()
			}
			got.Read, _ = rt.Get(ctx, "k")
			got.Redis = wtRawVersion(t, rc, prefix+"k")
			got.Store, _ = store.row("k")
			if diff := cmp.Diff(test.want, got, cmp.AllowUnexported(clRow{})); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// wtPauseWrites makes the Redis on the outage port refuse to run writes for d (CLIENT PAUSE WRITE): the
// cache fails while Redis keeps its (now stale) data, the hard case for an invalidation.
func wtPauseWrites(t *testing.T, d time.Duration) {
	t.Helper()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:" + clOutagePort}, DisableCache: true})
	if err != nil {
		t.Fatalf("connect to the outage Redis: %v", err)
	}
	defer rc.Close()
	if err := rc.Do(context.Background(), rc.B().ClientPause().Timeout(d.Milliseconds()).Write().Build()).Error(); err != nil {
		t.Fatalf("CLIENT PAUSE WRITE: %v", err)
	}
}

// wtOutages are the two ways the tests make the cache fail: Redis stopped (its data lost when it comes
// back, as deps.sh runs it without persistence), or Redis refusing writes while it keeps serving its old
// data to every other client.
var wtOutages = []struct {
	name  string
	begin func(t *testing.T)
	end   func(t *testing.T)
}{
	{"stopped", func(t *testing.T) { clDeps(t, "down") }, func(t *testing.T) { clDeps(t, "up") }},
	{"writes paused", func(t *testing.T) { wtPauseWrites(t, 1500*time.Millisecond) }, func(t *testing.T) {
		time.Sleep(1600 * time.Millisecond)
	}},
}

// With the cache failing after the store committed: Write succeeds (the store has it), the writer reads
// the new value throughout, and once Redis is back no client serves the old value.
func TestWriteThroughFailingCacheServesNoStaleValue(t *testing.T) {
	t.Parallel()
	clOutage(t)
	for _, outage := range wtOutages {
		t.Run(outage.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := clClient(t, clOutageURL(), cachelayer.WithRegisterer(reg))
			b := clClient(t, clOutageURL())
			ctx := context.Background()
			prefix := clPrefix(t)
			store := newClStore()
			wt := cachelayer.NewWriteThrough[int](a, prefix)
			readA := cachelayer.NewReadThrough(a, prefix, store.load)
			readB := cachelayer.NewReadThrough(b, prefix, store.load)
			if err := wt.Write(ctx, "k", 1, 1, store.set("k", 1, 1)); err != nil {
				t.Fatal(err)
			}
			for _, r := range []*cachelayer.ReadThrough[int]{readA, readB, readB} {
				if v, err := r.Get(ctx, "k"); err != nil || v != 1 {
					t.Fatalf("read before the outage = (%d, %v), want 1", v, err)
				}
			}

			outage.begin(t)
			if err := wt.Write(ctx, "k", 2, 2, store.set("k", 2, 2)); err != nil {
				t.Fatalf("Write with the cache failing: %v, want nil (the store has it)", err)
			}
			if got, _ := store.row("k"); got != (clRow{2, 2}) {
				t.Fatalf("store after Write = %+v, want {2 2}", got)
			}
			for i := range 20 {
				if v, err := readA.Get(ctx, "k"); err != nil || v != 2 {
					t.Fatalf("the writer's read %d during the outage = (%d, %v), want 2", i, v, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := clMetric(t, reg, "redis_fallbacks_total", map[string]string{"operation": "set"}); got != 1 {
				t.Errorf("redis_fallbacks_total{operation=set} = %v, want 1", got)
			}
			outage.end(t)

			clWaitAvailable(t, a)
			deadline := time.Now().Add(5 * time.Second)
			for {
				vb, errB := readB.Get(ctx, "k")
				if errB == nil && vb == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the other client still reads (%d, %v) 5 s after the outage ended, want 2", vb, errB)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if v, err := readA.Get(ctx, "k"); err != nil || v != 2 {
				t.Fatalf("the writer's read after the outage = (%d, %v), want 2", v, err)
			}
			if raw := wtRawVersion(t, clRueidis(t, a), prefix+"k"); raw == "v1" {
				t.Errorf("Redis still holds version 1 after the outage")
			}
		})
	}
}
