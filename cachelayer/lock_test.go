package cachelayer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// 30 goroutines over 3 clients take one lock 5 times each: never two inside at once, and every one gets
// its turns.
func TestLockMutualExclusion(t *testing.T) {
	t.Parallel()
	name := clPrefix(t) + "mutex"
	var clients []*cachelayer.Client
	for range 3 {
		clients = append(clients, clClient(t, redisURL()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var inside, maxInside, entries atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := range 30 {
		m := cachelayer.NewMutex(clients[i%3], name, 5*time.Second, cachelayer.WithLockWait(25*time.Second))
		wg.Go(func() {
			for range 5 {
				l, err := m.Lock(ctx)
				if err != nil {
					errs <- err
					return
				}
				n := inside.Add(1)
				for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
				}
				entries.Add(1)
				time.Sleep(200 * time.Microsecond)
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Lock/Unlock: %v", err)
	}
	if got := maxInside.Load(); got != 1 {
		t.Errorf("at most %d goroutines were inside the lock at once, want 1", got)
	}
	if got := entries.Load(); got != 150 {
		t.Errorf("%d entries into the lock, want 150", got)
	}
}

// The lock's life: held locks refuse others, only the owner can extend or release, and an expired lock
// is free.
func TestLockOwnershipAndExpiry(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	other := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	pttl := func(key string) time.Duration {
		ms, err := rc.Do(ctx, rc.B().Pttl().Key(key).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(ms) * time.Millisecond
	}

	t.Run("held lock refuses others", func(t *testing.T) {
		t.Parallel()
		name := clPrefix(t) + "held"
		l, err := cachelayer.NewMutex(c, name, time.Minute).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cachelayer.NewMutex(other, name, time.Minute).TryLock(ctx); !errors.Is(err, cachelayer.ErrLockHeld) {
			t.Errorf("TryLock of a held lock: err = %v, want ErrLockHeld", err)
		}
		start := time.Now()
		_, err = cachelayer.NewMutex(other, name, time.Minute, cachelayer.WithLockWait(150*time.Millisecond)).Lock(ctx)
		if !errors.Is(err, cachelayer.ErrLockHeld) {
			t.Errorf("Lock of a held lock with a 150 ms wait: err = %v, want ErrLockHeld", err)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Errorf("Lock with a 150 ms wait returned after %v", waited)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock by the owner: %v", err)
		}
		if _, err := cachelayer.NewMutex(other, name, time.Minute).TryLock(ctx); err != nil {
			t.Errorf("TryLock after Unlock: %v", err)
		}
	})
	t.Run("expiry frees the lock and the old owner cannot touch the new one", func(t *testing.T) {
		t.Parallel()
		name := clPrefix(t) + "expiry"
		old, err := cachelayer.NewMutex(c, name, 100*time.Millisecond).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		next, err := cachelayer.NewMutex(other, name, time.Minute).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock after the lock expired: %v", err)
		}
		if err := old.Extend(ctx, time.Minute); !errors.Is(err, cachelayer.ErrLockLost) {
			t.Errorf("Extend by the expired owner: err = %v, want ErrLockLost", err)
		}
		if err := old.Unlock(ctx); !errors.Is(err, cachelayer.ErrLockLost) {
			t.Errorf("Unlock by the expired owner: err = %v, want ErrLockLost", err)
		}
		if got := wtRaw(t, rc, next.Key()); got != next.Token() {
			t.Errorf("the lock holds %q after the old owner's attempts, want the new owner's token %q", got, next.Token())
		}
	})
	t.Run("extend", func(t *testing.T) {
		t.Parallel()
		name := clPrefix(t) + "extend"
		l, err := cachelayer.NewMutex(c, name, 200*time.Millisecond).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Extend(ctx, time.Minute); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := cachelayer.NewMutex(other, name, time.Minute).TryLock(ctx); !errors.Is(err, cachelayer.ErrLockHeld) {
			t.Errorf("TryLock past the original TTL of an extended lock: err = %v, want ErrLockHeld", err)
		}
		if got := pttl(l.Key()); got < 50*time.Second {
			t.Errorf("PTTL after Extend(1m) = %v", got)
		}
	})
}

// Lock keys carry a hash tag: the name's own when it has one, else the whole name.
func TestLockKeys(t *testing.T) {
	t.Parallel()
	for _, test := range []struct{ name, want string }{
		{"claims-scheduler", "lock:{claims-scheduler}"},
		{"{payer:123}:charge", "lock:{payer:123}:charge"},
		{"odd{", "lock:{odd{}"},
	} {
		if got := cachelayer.NewMutex(nil, test.name, time.Second).Key(); got != test.want {
			t.Errorf("NewMutex(%q).Key() = %q, want %q", test.name, got, test.want)
		}
	}
}
