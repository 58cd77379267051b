package cachelayer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// caAnswer is what a lookup of another participant's key gives in these tests.
type caAnswer struct {
	Key   string
	Owner string
}

// caRace makes callers goroutines, spread over clients, ask for key at the same moment, and returns
// their answers.
func caRace(t *testing.T, clients []*cachelayer.CacheAside[caAnswer], callers int, key string, ttl time.Duration,
	load func(context.Context) (caAnswer, bool, error)) []caAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	answers := make([]caAnswer, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-gate
			answers[i], errs[i] = clients[i%len(clients)].GetOrLoad(ctx, key, ttl, load)
		})
	}
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("GetOrLoad: %v", err)
	}
	return answers
}

func caAll(n int, a caAnswer) []caAnswer {
	out := make([]caAnswer, n)
	for i := range out {
		out[i] = a
	}
	return out
}

// 50 callers over 3 separate clients (3 instances) ask for one key at once: the loader runs exactly once,
// everyone gets its answer, and the cached copy lives at most the caller's ttl.
func TestCacheAsideStampede(t *testing.T) {
	t.Parallel()
	prefix := clPrefix(t)
	reg := prometheus.NewRegistry()
	var clients []*cachelayer.CacheAside[caAnswer]
	for range 3 {
		clients = append(clients, cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL(), cachelayer.WithRegisterer(reg)), prefix))
	}
	want := caAnswer{Key: "+5561988880000", Owner: "Empresa Ltda"}
	var loads atomic.Int64
	load := func(context.Context) (caAnswer, bool, error) {
		loads.Add(1)
		time.Sleep(100 * time.Millisecond) // a lookup at the directory
		return want, true, nil
	}
	const ttl = 30 * time.Second
	got := caRace(t, clients, 50, "k", ttl, load)
	if diff := cmp.Diff(caAll(50, want), got); diff != "" {
		t.Errorf("answers mismatch (-want +got):\n%s", diff)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("the loader ran %d times for 50 callers on 3 instances, want 1", n)
	}
	rc := clRueidis(t, clClient(t, redisURL()))
	pttl, err := rc.Do(context.Background(), rc.B().Pttl().Key(prefix+"{k}").Build()).AsInt64()
	if err != nil || pttl <= 0 || pttl > ttl.Milliseconds() {
		t.Errorf("PTTL of the cached value = (%d ms, %v), want in (0, %d]", pttl, err, ttl.Milliseconds())
	}
	// Later callers are answered from the cache without loading.
	if again := caRace(t, clients, 6, "k", ttl, load); loads.Load() != 1 || again[5] != want {
		t.Errorf("a second round loaded again (%d loads) or answered %+v", loads.Load(), again[5])
	}
}

// A value the loader may not cache (a natural person's key) is never stored: every round loads, and each
// caller of a round gets the value.
func TestCacheAsideNotCacheable(t *testing.T) {
	t.Parallel()
	prefix := clPrefix(t)
	var clients []*cachelayer.CacheAside[caAnswer]
	for range 3 {
		clients = append(clients, cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL()), prefix))
	}
	want := caAnswer{Key: "+5561977770000", Owner: "Fulano"}
	var loads atomic.Int64
	load := func(context.Context) (caAnswer, bool, error) {
		loads.Add(1)
		time.Sleep(50 * time.Millisecond)
		return want, false, nil
	}
	rc := clRueidis(t, clClient(t, redisURL()))
	for round := 1; round <= 2; round++ {
		before := loads.Load()
		got := caRace(t, clients, 20, "k", time.Minute, load)
		if diff := cmp.Diff(caAll(20, want), got); diff != "" {
			t.Errorf("round %d: answers mismatch (-want +got):\n%s", round, diff)
		}
		if loads.Load() == before {
			t.Errorf("round %d did not load: a non-cacheable value was served from somewhere", round)
		}
		if n, _ := rc.Do(context.Background(), rc.B().Exists().Key(prefix+"{k}").Build()).AsInt64(); n != 0 {
			t.Fatalf("round %d: a non-cacheable value is in Redis", round)
		}
		time.Sleep(1100 * time.Millisecond) // the loader's "load it yourselves" note expires
	}
}

// A loader that dies holding the lock: once the lock expires one waiter takes over, and it alone loads.
func TestCacheAsideLoaderDies(t *testing.T) {
	t.Parallel()
	prefix := clPrefix(t)
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	// The dead loader's lock, as GetOrLoad takes it.
	if err := rc.Do(ctx, rc.B().Set().Key(prefix+"{k}:lock").Value("dead-loader").Px(300*time.Millisecond).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	ca := []*cachelayer.CacheAside[caAnswer]{
		cachelayer.NewCacheAside[caAnswer](c, prefix),
		cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL()), prefix),
	}
	want := caAnswer{Key: "k", Owner: "taken over"}
	var loads atomic.Int64
	got := caRace(t, ca, 10, "k", time.Minute, func(context.Context) (caAnswer, bool, error) {
		loads.Add(1)
		return want, true, nil
	})
	if diff := cmp.Diff(caAll(10, want), got); diff != "" {
		t.Errorf("answers mismatch (-want +got):\n%s", diff)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("after the dead loader's lock expired the loader ran %d times, want 1", n)
	}
}

// A loader error reaches its caller, nothing is cached, and the lock is released at once: the next call
// loads again.
func TestCacheAsideLoaderError(t *testing.T) {
	t.Parallel()
	prefix := clPrefix(t)
	ca := cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL()), prefix)
	ctx := context.Background()
	var loads atomic.Int64
	fail := true
	load := func(context.Context) (caAnswer, bool, error) {
		loads.Add(1)
		if fail {
			return caAnswer{}, false, errClStoreDown
		}
		return caAnswer{Key: "k"}, true, nil
	}
	if _, err := ca.GetOrLoad(ctx, "k", time.Minute, load); !errors.Is(err, errClStoreDown) {
		t.Fatalf("GetOrLoad with a failing loader: err = %v, want errClStoreDown", err)
	}
	fail = false
	start := time.Now()
	if got, err := ca.GetOrLoad(ctx, "k", time.Minute, load); err != nil || got.Key != "k" {
		t.Fatalf("GetOrLoad after the failure = (%+v, %v)", got, err)
	}
	if n := loads.Load(); n != 2 {
		t.Errorf("loads = %d, want 2", n)
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Errorf("the second call waited %v: the failed loader's lock was not released", waited)
	}
}

// With Redis down every caller loads on its own, without an error, and counts a fallback; nothing waits.
func TestCacheAsideFallsBackWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	clOutage(t)
	reg := prometheus.NewRegistry()
	c := clClient(t, clOutageURL(), cachelayer.WithRegisterer(reg))
	ca := cachelayer.NewCacheAside[caAnswer](c, clPrefix(t))
	ctx := context.Background()
	var loads atomic.Int64
	load := func(context.Context) (caAnswer, bool, error) {
		loads.Add(1)
		return caAnswer{Key: "k", Owner: "o"}, true, nil
	}
	clDeps(t, "down")
	for range 3 {
		if got, err := ca.GetOrLoad(ctx, "k", time.Minute, load); err != nil || got.Owner != "o" {
			t.Fatalf("GetOrLoad with Redis down = (%+v, %v)", got, err)
		}
	}
	if n := loads.Load(); n != 3 {
		t.Errorf("loads with Redis down = %d, want 3", n)
	}
	if got := clMetric(t, reg, "redis_fallbacks_total", map[string]string{"operation": "get_or_load"}); got != 3 {
		t.Errorf("redis_fallbacks_total{operation=get_or_load} = %v, want 3", got)
	}
	clDeps(t, "up")
	clWaitAvailable(t, c)
	for range 3 {
		if _, err := ca.GetOrLoad(ctx, "k", time.Minute, load); err != nil {
			t.Fatal(err)
		}
	}
	if n := loads.Load(); n != 4 {
		t.Errorf("loads after recovery = %d, want 4 (one load, then cache hits)", n)
	}
}

// Get answers only what is cached, and never loads: a miss, then the value
// a GetOrLoad cached (at once on another instance; on the loading one once
// Redis's invalidation of its cached miss arrives, which is asynchronous),
// and a miss for a value its loader said not to cache.
func TestCacheAsideGet(t *testing.T) {
	t.Parallel()
	prefix := clPrefix(t)
	ca := cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL()), prefix)
	other := cachelayer.NewCacheAside[caAnswer](clClient(t, redisURL()), prefix)
	ctx := context.Background()
	if v, ok := ca.Get(ctx, "k", time.Minute); ok {
		t.Fatalf("Get before anything was cached = %+v, want a miss", v)
	}
	if _, err := ca.GetOrLoad(ctx, "k", time.Minute, func(context.Context) (caAnswer, bool, error) {
		return caAnswer{Key: "k", Owner: "o"}, true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if v, ok := other.Get(ctx, "k", time.Minute); !ok || v.Owner != "o" {
		t.Fatalf("another instance's Get after GetOrLoad cached it = (%+v, %v), want the value", v, ok)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		v, ok := ca.Get(ctx, "k", time.Minute)
		if ok && v.Owner == "o" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loading instance's Get still = (%+v, %v) 10 s after GetOrLoad cached it", v, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ca.GetOrLoad(ctx, "private", time.Minute, func(context.Context) (caAnswer, bool, error) {
		return caAnswer{Key: "private"}, false, nil
	}); err != nil {
		t.Fatal(err)
	}
	if v, ok := other.Get(ctx, "private", time.Minute); ok {
		t.Fatalf("Get of a value its loader said not to cache = %+v, want a miss", v)
	}
}
