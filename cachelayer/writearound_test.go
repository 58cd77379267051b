package cachelayer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// The order of writes with Redis up: the store first, its error returned with the cache untouched;
// otherwise the key is invalidated (a tombstone) and the next read loads the store's new state.
func TestWriteAroundOrderOfWrites(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	type state struct {
		Err   string
		Read  string
		Redis string
	}
	read := func(rt *cachelayer.ReadThrough[int]) string {
		v, err := rt.Get(ctx, "k")
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("value %d", v)
	}
	for _, test := range []struct {
		name  string
		steps func(wa *cachelayer.WriteAround, store *clStore, prefix string) error
		want  state
	}{
		{"store fails: error, cache untouched", func(wa *cachelayer.WriteAround, store *clStore, prefix string) error {
			store.setFail(true)
			defer store.setFail(false)
			return wa.Write(ctx, "k", store.del("k"))
		}, state{Err: errClStoreDown.Error(), Read: "value 1", Redis: "v1"}},
		{"delete: store, then invalidate", func(wa *cachelayer.WriteAround, store *clStore, prefix string) error {
			return wa.Write(ctx, "k", store.del("k"))
		}, state{Read: "k: " + errClNotFound.Error(), Redis: "tombstone"}},
		{"update: store, then invalidate", func(wa *cachelayer.WriteAround, store *clStore, prefix string) error {
			return wa.Write(ctx, "k", store.set("k", 2, 2))
		}, state{Read: "value 2", Redis: "tombstone"}},
		{"a write-through arriving after the invalidation is refused", func(wa *cachelayer.WriteAround, store *clStore, prefix string) error {
			// A writer committed version 2 to the store, a delete committed after it, then the first
			// writer's SET arrives: the tombstone refuses it.
			_ = store.set("k", 2, 2)(ctx)
			if err := wa.Write(ctx, "k", store.del("k")); err != nil {
				return err
			}
			return cachelayer.NewWriteThrough[int](c, prefix).Put(ctx, "k", 2, 2)
		}, state{Read: "k: " + errClNotFound.Error(), Redis: "tombstone"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			prefix := clPrefix(t)
			store := newClStore()
			wa := cachelayer.NewWriteAround(c, prefix)
			rt := cachelayer.NewReadThrough(c, prefix, store.load)
			_ = store.set("k", 1, 1)(ctx)
			if got := read(rt); got != "value 1" {
				t.Fatalf("read before = %s, want value 1", got)
			}
			var got state
			if err := test.steps(wa, store, prefix); err != nil {
				got.Err = err.Error()
			}
			got.Read = read(rt)
			got.Redis = wtRawVersion(t, rc, prefix+"k")
			if diff := cmp.Diff(test.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The tombstone lives its TTL; afterwards the key is cached again.
func TestWriteAroundTombstoneExpires(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	prefix := clPrefix(t)
	store := newClStore()
	wa := cachelayer.NewWriteAround(c, prefix, cachelayer.WithTombstoneTTL(100*time.Millisecond))
	rt := cachelayer.NewReadThrough(c, prefix, store.load)
	if err := wa.Write(ctx, "k", store.set("k", 5, 5)); err != nil {
		t.Fatal(err)
	}
	if got := wtRawVersion(t, rc, prefix+"k"); got != "tombstone" {
		t.Fatalf("Redis after the write = %s, want tombstone", got)
	}
	if v, err := rt.Get(ctx, "k"); err != nil || v != 5 {
		t.Fatalf("read under the tombstone = (%d, %v), want 5 from the store", v, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for wtRawVersion(t, rc, prefix+"k") != "v5" {
		if time.Now().After(deadline) {
			t.Fatalf("the key was not cached again within 3 s of its 100 ms tombstone: Redis holds %s", wtRawVersion(t, rc, prefix+"k"))
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := rt.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
}

// With the cache failing after the store committed: Write succeeds, the writer reads the store's new
// state throughout, and once Redis is back no client serves the old value.
func TestWriteAroundFailingCacheServesNoStaleValue(t *testing.T) {
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
			wa := cachelayer.NewWriteAround(a, prefix)
			readA := cachelayer.NewReadThrough(a, prefix, store.load)
			readB := cachelayer.NewReadThrough(b, prefix, store.load)
			_ = store.set("k", 1, 1)(ctx)
			for _, r := range []*cachelayer.ReadThrough[int]{readA, readB, readB} {
				if v, err := r.Get(ctx, "k"); err != nil || v != 1 {
					t.Fatalf("read before the outage = (%d, %v), want 1", v, err)
				}
			}

			outage.begin(t)
			if err := wa.Write(ctx, "k", store.del("k")); err != nil {
				t.Fatalf("Write with the cache failing: %v, want nil (the store has it)", err)
			}
			for i := range 20 {
				if v, err := readA.Get(ctx, "k"); !errors.Is(err, errClNotFound) {
					t.Fatalf("the writer's read %d during the outage = (%d, %v), want not found", i, v, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := clMetric(t, reg, "redis_fallbacks_total", map[string]string{"operation": "invalidate"}); got != 1 {
				t.Errorf("redis_fallbacks_total{operation=invalidate} = %v, want 1", got)
			}
			outage.end(t)

			clWaitAvailable(t, a)
			deadline := time.Now().Add(5 * time.Second)
			for {
				vb, errB := readB.Get(ctx, "k")
				if errors.Is(errB, errClNotFound) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the other client still reads (%d, %v) 5 s after the outage ended, want not found", vb, errB)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if v, err := readA.Get(ctx, "k"); !errors.Is(err, errClNotFound) {
				t.Fatalf("the writer's read after the outage = (%d, %v), want not found", v, err)
			}
			if raw := wtRawVersion(t, clRueidis(t, a), prefix+"k"); raw == "v1" {
				t.Errorf("Redis still holds version 1 after the outage")
			}
		})
	}
}
