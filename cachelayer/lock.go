package cachelayer

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

var (
	// ErrLockHeld means another owner holds the lock (TryLock), or held it for as long as Lock would wait.
	ErrLockHeld = errors.New("cachelayer: lock is held by another owner")
	// ErrLockLost means the lock is no longer this owner's: it expired, and maybe someone else took it.
	ErrLockLost = errors.New("cachelayer: lock is no longer held")
)

// Mutex is a distributed lock on one name: SET key token NX PX ttl to take it, and Lua scripts that
// extend or release it only while the key still holds the owner's random token, so an owner whose lock
// expired can never extend or release someone else's. It is a lease, not a guarantee: an owner that
// stalls longer than the TTL loses the lock, so work done under it must either finish within the TTL
// (extend it while working) or be safe to repeat.
//
// The key is "lock:{name}"; a name that already has a hash tag ("{payer:123}:x") keeps it, so a lock can
// share a Redis Cluster slot with the keys it guards.
type Mutex struct {
	c    *Client
	key  string
	ttl  time.Duration
	wait time.Duration
}

// MutexOption configures a [Mutex].
type MutexOption func(*Mutex)

// WithLockWait bounds how long [Mutex.Lock] keeps retrying (default: the lock's TTL).
func WithLockWait(d time.Duration) MutexOption { return func(m *Mutex) { m.wait = d } }

// NewMutex returns the lock called name, held for ttl at a time.
func NewMutex(c *Client, name string, ttl time.Duration, opts ...MutexOption) *Mutex {
	key := "lock:{" + name + "}"
	if i := strings.IndexByte(name, '{'); i >= 0 && strings.IndexByte(name[i:], '}') > 1 {
		key = "lock:" + name
	}
	m := &Mutex{c: c, key: key, ttl: max(ttl, time.Millisecond), wait: ttl}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Key returns the Redis key of the lock.
func (m *Mutex) Key() string { return m.key }

// TryLock takes the lock if it is free, or returns [ErrLockHeld].
func (m *Mutex) TryLock(ctx context.Context) (*Lock, error) {
	return lockAcquire(ctx, m.c, m.key, m.ttl)
}

// Lock takes the lock, retrying with jittered backoff (2 ms doubling to 100 ms) while another owner holds
// it, for at most the wait of [WithLockWait] or until ctx is done.
func (m *Mutex) Lock(ctx context.Context) (*Lock, error) {
	deadline := time.Now().Add(m.wait)
	backoff := 2 * time.Millisecond
	for {
		l, err := m.TryLock(ctx)
		if !errors.Is(err, ErrLockHeld) {
			return l, err
		}
		sleep := backoff/2 + rand.N(backoff/2+1)
		if time.Now().Add(sleep).After(deadline) {
			return nil, ErrLockHeld
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// Lock is a held lock.
type Lock struct {
	c     *Client
	key   string
	token string
}

// Key returns the lock's Redis key.
func (l *Lock) Key() string { return l.key }

// Token returns the owner's random token, which the lock's key holds while the lock is this owner's.
func (l *Lock) Token() string { return l.token }

// Extend makes the lock live ttl from now, or returns [ErrLockLost].
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	return lockRun(ctx, l.c, "extend", lockExtendScript, l.key, l.token, rtMillis(ttl))
}

// Unlock releases the lock, or returns [ErrLockLost] if it was no longer this owner's.
func (l *Lock) Unlock(ctx context.Context) error {
	return lockRun(ctx, l.c, "unlock", lockUnlockScript, l.key, l.token)
}

func lockAcquire(ctx context.Context, c *Client, key string, ttl time.Duration) (*Lock, error) {
	rc, err := c.Rueidis()
	if err != nil {
		return nil, err
	}
	token := rtToken()
	start := time.Now()
	err = rc.Do(ctx, rc.B().Set().Key(key).Value(token).Nx().Px(ttl).Build()).Error()
	c.metrics.observe("lock", start)
	switch {
	case err == nil:
		return &Lock{c: c, key: key, token: token}, nil
	case rueidis.IsRedisNil(err):
		return nil, ErrLockHeld
	}
	c.Failed(ctx, err)
	return nil, err
}

func lockRun(ctx context.Context, c *Client, op string, script *rueidis.Lua, key string, args ...string) error {
	rc, err := c.Rueidis()
	if err != nil {
		return err
	}
	start := time.Now()
	n, err := script.Exec(ctx, rc, []string{key}, args).AsInt64()
	c.metrics.observe(op, start)
	if err != nil {
		c.Failed(ctx, err)
		return err
	}
	if n == 0 {
		return ErrLockLost
	}
	return nil
}

// lockUnlockScript deletes KEYS[1] if it holds ARGV[1] (compare-and-delete).
var lockUnlockScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// lockExtendScript sets KEYS[1] to expire in ARGV[2] ms if it holds ARGV[1] (compare-and-pexpire).
var lockExtendScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)
