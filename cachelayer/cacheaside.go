package cachelayer

import (
	"context"
	"time"

	"github.com/redis/rueidis"
)

// CacheAside is the cache-aside strategy with stampede protection across instances, for values this PSP
// does not own (lookups of other participants' keys), which it may cache only sometimes and only briefly:
// each call says how long (ttl), and its loader says whether the value may be cached at all.
//
// On a miss, one caller per key at a time loads, across every instance sharing Redis: it holds the key's
// load lock (SET NX PX with a random token, 5 s by default, see [WithLoadLockTTL]) while it loads, then sets
// the value and releases the lock in one script. The others poll Redis (2 ms doubling to 50 ms) and take
// its value; if the loader dies, its lock expires and the first waiter to see that takes over. A value the
// loader may not cache is not stored: the loader turns its lock into a one-second "load it yourselves"
// note, and the waiters load on their own. A waiter that has waited longer than [WithLoadWait] (default:
// the lock TTL plus a second) loads on its own without caching. When Redis fails, every caller loads on
// its own and counts a fallback.
//
// The value key is prefix+"{"+key+"}" and the lock prefix+"{"+key+"}:lock": one hash tag, one Redis Cluster
// slot, so one script can touch both.
type CacheAside[T any] struct {
	c      *Client
	prefix string
	s      cacheSettings
}

// NewCacheAside returns a cache-aside cache of the keys under prefix.
func NewCacheAside[T any](c *Client, prefix string, opts ...CacheOption) *CacheAside[T] {
	return &CacheAside[T]{c: c, prefix: prefix, s: cacheSettingsFor(c, opts)}
}

// WithLoadLockTTL sets how long a [CacheAside] loader holds its key's load lock (default 5 s): longer than a
// load takes, or a second loader starts.
func WithLoadLockTTL(d time.Duration) CacheOption { return func(s *cacheSettings) { s.lockTTL = d } }

// WithLoadWait bounds how long a [CacheAside] caller waits for another instance's loader.
func WithLoadWait(d time.Duration) CacheOption { return func(s *cacheSettings) { s.wait = d } }

// Get returns key's cached value without loading it; ok is false on a miss, and when Redis fails (the
// caller then takes its loading path, [CacheAside.GetOrLoad], which falls back on its own). A miss is not
// counted here: the GetOrLoad that follows counts it.
func (a *CacheAside[T]) Get(ctx context.Context, key string, ttl time.Duration) (v T, ok bool) {
	if ttl <= 0 {
		return v, false
	}
	rc, err := a.c.Rueidis()
	if err != nil {
		return v, false
	}
	start := time.Now()
	res := rc.DoCache(ctx, rc.B().Get().Key(a.prefix+"{"+key+"}").Cache(), ttl)
	raw, err := res.AsBytes()
	if err != nil {
		if !rueidis.IsRedisNil(err) && ctx.Err() == nil {
			a.c.Failed(ctx, err)
		}
		return v, false
	}
	if v, ok = caDecode[T](a.s.codec, raw); !ok {
		return v, false
	}
	if res.IsCacheHit() {
		a.c.metrics.hitsLocal.Inc()
	} else {
		a.c.metrics.observe("get", start)
		a.c.metrics.hitsRedis.Inc()
	}
	return v, true
}

// GetOrLoad returns key's cached value, or loads it (once across instances, see [CacheAside]) and caches
// it for ttl when load says it may be cached. A ttl of 0 or less never caches.
func (a *CacheAside[T]) GetOrLoad(ctx context.Context, key string, ttl time.Duration, load func(context.Context) (T, bool, error)) (T, error) {
	var zero T
	c := a.c
	dataKey := a.prefix + "{" + key + "}"
	lockKey := dataKey + ":lock"
	if ttl <= 0 {
		v, _, err := load(ctx) // nothing to share
		return v, err
	}
	rc, err := c.Rueidis()
	if err != nil {
		return caFallback(ctx, c, load)
	}
	start := time.Now()
	res := rc.DoCache(ctx, rc.B().Get().Key(dataKey).Cache(), ttl)
	raw, err := res.AsBytes()
	switch {
	case err == nil:
		if v, ok := caDecode[T](a.s.codec, raw); ok {
			if res.IsCacheHit() {
				c.metrics.hitsLocal.Inc()
			} else {
				c.metrics.observe("get", start)
				c.metrics.hitsRedis.Inc()
			}
			return v, nil
		}
	case rueidis.IsRedisNil(err):
	default:
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
		c.Failed(ctx, err)
		return caFallback(ctx, c, load)
	}
	c.metrics.misses.Inc()
	backoff := 2 * time.Millisecond
	deadline := time.Now().Add(a.s.wait)
	for {
		l, err := lockAcquire(ctx, c, lockKey, a.s.lockTTL)
		if err == nil {
			return a.caLoad(ctx, rc, dataKey, l, ttl, load)
		}
		if err != ErrLockHeld {
			if ctx.Err() != nil {
				return zero, ctx.Err()
			}
			return caFallback(ctx, c, load)
		}
		// Someone else loads: wait for its value, its note, or its lock to go.
		for {
			if time.Now().Add(backoff).After(deadline) {
				v, _, err := load(ctx)
				return v, err
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return zero, ctx.Err()
			case <-t.C:
			}
			backoff = min(2*backoff, 50*time.Millisecond)
			start := time.Now()
			res := rc.DoMulti(ctx, rc.B().Get().Key(dataKey).Build(), rc.B().Get().Key(lockKey).Build())
			data, derr := res[0].AsBytes()
			owner, lerr := res[1].ToString()
			if derr != nil && !rueidis.IsRedisNil(derr) || lerr != nil && !rueidis.IsRedisNil(lerr) {
				if ctx.Err() != nil {
					return zero, ctx.Err()
				}
				c.Failed(ctx, derr)
				c.Failed(ctx, lerr)
				return caFallback(ctx, c, load)
			}
			c.metrics.observe("get", start)
			if derr == nil {
				if v, ok := caDecode[T](a.s.codec, data); ok {
					c.metrics.hitsRedis.Inc()
					return v, nil
				}
			}
			if owner == caNoCacheNote {
				v, _, err := load(ctx)
				return v, err
			}
			if rueidis.IsRedisNil(lerr) {
				break // the loader is gone without a value: try to take over
			}
		}
	}
}

// caLoad runs load holding the key's load lock l.
func (a *CacheAside[T]) caLoad(ctx context.Context, rc rueidis.Client, dataKey string, l *Lock, ttl time.Duration, load func(context.Context) (T, bool, error)) (T, error) {
	c := a.c
	// The previous loader may have finished between our read and our lock.
	if raw, err := rc.Do(ctx, rc.B().Get().Key(dataKey).Build()).AsBytes(); err == nil {
		if v, ok := caDecode[T](a.s.codec, raw); ok {
			caRelease(ctx, c, l)
			c.metrics.hitsRedis.Inc()
			return v, nil
		}
	}
	v, cacheable, err := load(ctx)
	wctx, cancel := clientOpCtx(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	if err != nil {
		caRelease(wctx, c, l)
		return v, err
	}
	if !cacheable {
		start := time.Now()
		if err := caNoteScript.Exec(wctx, rc, []string{l.key}, []string{l.token, caNoCacheNote}).Error(); err != nil {
			c.Failed(wctx, err)
		}
		c.metrics.observe("unlock", start)
		return v, nil
	}
	payload, err := a.s.codec.Marshal(v)
	if err != nil {
		caRelease(wctx, c, l)
		return v, nil
	}
	start := time.Now()
	if err := caSetScript.Exec(wctx, rc, []string{dataKey, l.key}, []string{l.token, string(payload), rtMillis(ttl)}).Error(); err != nil {
		c.Failed(wctx, err)
	}
	c.metrics.observe("set", start)
	return v, nil
}

func caRelease(ctx context.Context, c *Client, l *Lock) {
	if err := l.Unlock(ctx); err != nil && err != ErrLockLost {
		c.Failed(ctx, err)
	}
}

func caFallback[T any](ctx context.Context, c *Client, load func(context.Context) (T, bool, error)) (T, error) {
	c.metrics.fallback("get_or_load")
	v, _, err := load(ctx)
	return v, err
}

func caDecode[T any](codec Codec, raw []byte) (T, bool) {
	var v T
	if err := codec.Unmarshal(raw, &v); err != nil {
		return v, false
	}
	return v, true
}

// caNoCacheNote is what a loader leaves in its lock when its value may not be cached.
const caNoCacheNote = "nocache"

// caSetScript sets KEYS[1] to ARGV[2] for ARGV[3] ms and releases the lock KEYS[2] if it holds ARGV[1]. The
// value is set even if the lock expired meanwhile: it is what the store said, and no newer version exists
// for values this PSP does not own.
var caSetScript = rueidis.NewLuaScript(`
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
`)

// caNoteScript replaces the lock KEYS[1], if it holds ARGV[1], by the note ARGV[2] for one second.
var caNoteScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', 1000)
  return 1
end
return 0
`)
