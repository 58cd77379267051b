package cachelayer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// rtRead is what one Get returned, and how many times the store was read so far.
type rtRead struct {
	Value int
	Err   string
	Loads int
}

func rtGet(ctx context.Context, rt *cachelayer.ReadThrough[int], store *clStore, key string) rtRead {
	v, err := rt.Get(ctx, key)
	r := rtRead{Value: v, Loads: store.loadCount(key)}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// A miss reads the store once and fills Redis; the next reads come from Redis until the invalidation of
// the client's own fill has dropped its local copy of the absent key, then from the client-side cache; the
// metrics say which.
func TestReadThroughMissThenHits(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := clClient(t, redisURL(), cachelayer.WithRegisterer(reg))
	store := newClStore()
	rt := cachelayer.NewReadThrough(c, clPrefix(t), store.load, cachelayer.WithCacheTTL(time.Minute))
	ctx := context.Background()
	_ = store.set("k", 7, 1)(ctx)
	local := func() float64 { return clMetric(t, reg, "redis_hits_total", map[string]string{"source": "local"}) }

	var got []rtRead
	for range 3 {
		got = append(got, rtGet(ctx, rt, store, "k"))
	}
	want := []rtRead{{Value: 7, Loads: 1}, {Value: 7, Loads: 1}, {Value: 7, Loads: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("three reads mismatch (-want +got):\n%s", diff)
	}
	if got := clMetric(t, reg, "redis_misses_total", nil); got != 1 {
		t.Errorf("redis_misses_total = %v after three reads, want 1", got)
	}
	if got := clMetric(t, reg, "redis_hits_total", nil); got != 2 {
		t.Errorf("redis_hits_total = %v after three reads, want 2", got)
	}
	deadline := time.Now().Add(2 * time.Second)
	for local() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no client-side cache hit within 2 s of reads")
		}
		if got := rtGet(ctx, rt, store, "k"); got != (rtRead{Value: 7, Loads: 1}) {
			t.Fatalf("read = %+v, want 7 from the cache", got)
		}
	}
	before := clMetric(t, reg, "redis_hits_total", map[string]string{"source": "redis"})
	for range 100 {
		_ = rtGet(ctx, rt, store, "k")
	}
	if got := clMetric(t, reg, "redis_hits_total", map[string]string{"source": "redis"}) - before; got != 0 {
		t.Errorf("%v of 100 reads went to Redis once the client-side copy was in place, want 0", got)
	}
}

// A store error reaches the caller, nothing is cached and the fill lease is released: the next read
// loads again and fills.
func TestReadThroughStoreErrorIsNotCached(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	store := newClStore()
	prefix := clPrefix(t)
	rt := cachelayer.NewReadThrough(c, prefix, store.load)
	ctx := context.Background()

	store.setFail(true)
	if _, err := rt.Get(ctx, "k"); !errors.Is(err, errClStoreDown) {
		t.Fatalf("Get with the store down: err = %v, want errClStoreDown", err)
	}
	if _, err := rt.Get(ctx, "absent"); !errors.Is(err, errClStoreDown) {
		t.Fatalf("Get with the store down: err = %v, want errClStoreDown", err)
	}
	store.setFail(false)
	if _, err := rt.Get(ctx, "absent"); !errors.Is(err, errClNotFound) {
		t.Fatalf("Get of a key the store lacks: err = %v, want errClNotFound", err)
	}
	_ = store.set("k", 1, 1)(ctx)
	got := []rtRead{rtGet(ctx, rt, store, "k"), rtGet(ctx, rt, store, "k")}
	want := []rtRead{{Value: 1, Loads: 2}, {Value: 1, Loads: 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reads after the store recovered mismatch (-want +got):\n%s", diff)
	}
	rc := clRueidis(t, c)
	if n, _ := rc.Do(ctx, rc.B().Exists().Key(prefix+"absent").Build()).AsInt64(); n != 0 {
		t.Errorf("a key the store lacks is in Redis (a lease left behind?)")
	}
}

// A slow reader that read the store before a write cannot put the old value back after it: the write
// replaced its fill lease.
func TestReadThroughFillCannotUndoAWrite(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	other := clClient(t, redisURL())
	prefix := clPrefix(t)
	store := newClStore()
	ctx := context.Background()
	_ = store.set("k", 1, 1)(ctx)

	loaded := make(chan struct{})
	proceed := make(chan struct{})
	slow := func(ctx context.Context, key string) (int, int64, error) {
		v, ver, err := store.load(ctx, key)
		close(loaded)
		<-proceed
		return v, ver, err
	}
	rt := cachelayer.NewReadThrough(c, prefix, slow)
	for _, test := range []struct {
		name  string
		write func()
		want  int
	}{
		{"write-around delete", func() {
			_ = cachelayer.NewWriteAround(other, prefix).Write(ctx, "k", store.del("k"))
		}, 0},
		{"write-through update", func() {
			_ = cachelayer.NewWriteThrough[int](other, prefix).Write(ctx, "k", 2, 2, store.set("k", 2, 2))
		}, 2},
	} {
		t.Run(test.name, func(t *testing.T) {
			rc := clRueidis(t, c)
			rc.Do(ctx, rc.B().Del().Key(prefix+"k").Build())
			_ = store.set("k", 1, 1)(ctx)
			loaded, proceed = make(chan struct{}), make(chan struct{})
			done := make(chan int)
			go func() {
				v, _ := rt.Get(ctx, "k")
				done <- v
			}()
			<-loaded // the reader has read 1 from the store
			test.write()
			close(proceed)
			if v := <-done; v != 1 {
				t.Fatalf("the slow reader got %d, want the 1 it loaded", v)
			}
			fresh := cachelayer.NewReadThrough(clClient(t, redisURL()), prefix, store.load)
			v, err := fresh.Get(ctx, "k")
			if test.want == 0 {
				if !errors.Is(err, errClNotFound) {
					t.Fatalf("after the delete another client read (%d, %v), want errClNotFound", v, err)
				}
				return
			}
			if err != nil || v != test.want {
				t.Fatalf("after the write another client read (%d, %v), want %d", v, err, test.want)
			}
		})
	}
}

// While Redis is down, Get answers from the store without an error and counts a fallback; when Redis
// returns the client recovers by itself and reads hit the cache again.
func TestReadThroughFallsBackWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	clOutage(t)
	reg := prometheus.NewRegistry()
	c := clClient(t, clOutageURL(), cachelayer.WithRegisterer(reg))
	store := newClStore()
	rt := cachelayer.NewReadThrough(c, clPrefix(t), store.load)
	ctx := context.Background()
	_ = store.set("k", 1, 1)(ctx)
	fallbacks := func() float64 {
		return clMetric(t, reg, "redis_fallbacks_total", map[string]string{"operation": "get"})
	}
	hits := func() float64 { return clMetric(t, reg, "redis_hits_total", nil) }

	if got := []rtRead{rtGet(ctx, rt, store, "k"), rtGet(ctx, rt, store, "k")}; got[1] != (rtRead{Value: 1, Loads: 1}) {
		t.Fatalf("reads with Redis up = %+v, want the second one cached", got)
	}
	clDeps(t, "down")
	_ = store.set("k", 2, 2)(ctx) // changed behind the cache's back: the store is the truth
	before := fallbacks()
	for i := range 5 {
		if got := rtGet(ctx, rt, store, "k"); got.Value != 2 || got.Err != "" {
			t.Fatalf("read %d with Redis down = %+v, want 2 from the store and no error", i, got)
		}
	}
	if got := fallbacks() - before; got != 5 {
		t.Errorf("redis_fallbacks_total{operation=get} grew by %v over 5 reads with Redis down, want 5", got)
	}
	if c.Available() {
		t.Errorf("Available() = true with Redis down")
	}

	clDeps(t, "up")
	clWaitAvailable(t, c)
	hitsBefore, fallbacksBefore := hits(), fallbacks()
	for range 3 {
		if got := rtGet(ctx, rt, store, "k"); got.Value != 2 || got.Err != "" {
			t.Fatalf("read after recovery = %+v, want 2", got)
		}
	}
	if got := hits() - hitsBefore; got != 2 {
		t.Errorf("cache hits over 3 reads after recovery = %v, want 2 (a miss, then hits)", got)
	}
	if got := fallbacks() - fallbacksBefore; got != 0 {
		t.Errorf("fallbacks after recovery = %v, want 0", got)
	}
}
