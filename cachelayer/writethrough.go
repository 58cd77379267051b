package cachelayer

import (
	"context"
	"errors"
	"time"

	"github.com/redis/rueidis"
)

// WriteThrough is the write-through strategy: the store first, then the cache, for keys read with a
// [ReadThrough] of the same prefix and codec.
//
// Order of writes: Write encodes the value, calls store, and returns store's error untouched with the
// cache untouched. After the store succeeded it sets the value in Redis only if the version there is older
// (Lua), so two writers racing, or a write racing a fill, always leave the newest version. If that SET
// fails, it writes a tombstone instead (see [WriteAround]); if that fails too (Redis is down), the client
// remembers the key as dirty, and nothing trusts the cache for it until a tombstone reaches Redis, which
// the client retries as soon as Redis answers, before it reports itself available again. A cache failure
// is never returned: the store has the truth, and no stale value is served.
type WriteThrough[T any] struct {
	c      *Client
	prefix string
	s      cacheSettings
}

// NewWriteThrough returns a write-through cache of the keys under prefix.
func NewWriteThrough[T any](c *Client, prefix string, opts ...CacheOption) *WriteThrough[T] {
	return &WriteThrough[T]{c: c, prefix: prefix, s: cacheSettingsFor(c, opts)}
}

// ErrVersion means a negative version: versions are 0 or more (an updated_at in ns, a sequence).
var ErrVersion = errors.New("cachelayer: a cache version must be 0 or more")

// Write stores v with store, then caches it with its version. It returns store's error (or an encoding or
// version error, before store is called); a cache failure is handled, not returned.
func (w *WriteThrough[T]) Write(ctx context.Context, key string, v T, version int64, store func(context.Context) error) error {
	if version < 0 {
		return ErrVersion
	}
	payload, err := w.s.codec.Marshal(v)
	if err != nil {
		return err
	}
	if store != nil {
		if err := store(ctx); err != nil {
			return err
		}
	}
	w.wtSet(ctx, w.prefix+key, version, rtEncode(version, payload))
	return nil
}

// Put caches v after the caller's own store committed it: Write without the store step.
func (w *WriteThrough[T]) Put(ctx context.Context, key string, v T, version int64) error {
	return w.Write(ctx, key, v, version, nil)
}

// wtSet sets the value if newer, or else invalidates, or else marks the key dirty. The store has
// committed, so it goes on even if the caller's ctx is done, within the write timeout.
func (w *WriteThrough[T]) wtSet(ctx context.Context, k string, version int64, value string) {
	c := w.c
	ctx, cancel := clientOpCtx(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	c.marks.begin(k, true)
	localTTL := time.Duration(c.localTTL.Load())
	if c.dirtyHas(k) {
		c.dirtyResolve(ctx, k)
	}
	if rc, err := c.Rueidis(); err == nil {
		start := time.Now()
		err = wtSetNewerScript.Exec(ctx, rc, []string{k}, []string{rtVersion(version), value, rtMillis(w.s.ttl)}).Error()
		c.metrics.observe("set", start)
		if err == nil {
			c.marks.ack(k, version, false, localTTL)
			return
		}
		c.Failed(ctx, err)
	}
	c.metrics.fallback("set")
	if !c.waInvalidate(ctx, k, w.s.tombstone) {
		c.dirtyAdd(k, w.s.tombstone)
	}
	c.marks.ack(k, 0, true, localTTL)
}

// wtSetNewerScript sets KEYS[1] to ARGV[2] for ARGV[3] ms unless it holds a value whose version is at
// least ARGV[1] or a tombstone. Versions are 20-digit zero-padded strings, compared as strings because Lua
// numbers are doubles. A fill lease is older than any write and is replaced.
var wtSetNewerScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local tag = string.sub(cur, 1, 1)
  if tag == 't' then return 0 end
  if tag == 'v' and string.sub(cur, 2, 21) >= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)
