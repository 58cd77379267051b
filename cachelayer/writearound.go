package cachelayer

import (
	"context"
	"time"

	"github.com/redis/rueidis"
)

// WriteAround is the write-around strategy: the store is written, the cache only invalidated, and the
// next read (a [ReadThrough] of the same prefix) loads the new state.
//
// The invalidation is a short-lived tombstone (SET key t PX, 5 s by default, see [WithTombstoneTTL])
// rather than a DEL: while it lives no fill lease can be taken and no write-through SET is accepted, so a
// fill or a write-through that read the store before the change cannot put the old value back after it.
// Reads meanwhile go to the store. Order of writes and failures as for [WriteThrough]: store first (its
// error returned, cache untouched); if the tombstone cannot be written the key is dirty until it can.
type WriteAround struct {
	c      *Client
	prefix string
	s      cacheSettings
}

// NewWriteAround returns a write-around cache of the keys under prefix.
func NewWriteAround(c *Client, prefix string, opts ...CacheOption) *WriteAround {
	return &WriteAround{c: c, prefix: prefix, s: cacheSettingsFor(c, opts)}
}

// Write calls store and, if it succeeded, invalidates key. It returns store's error; a cache failure is
// handled, not returned.
func (w *WriteAround) Write(ctx context.Context, key string, store func(context.Context) error) error {
	if store != nil {
		if err := store(ctx); err != nil {
			return err
		}
	}
	w.Invalidate(ctx, key)
	return nil
}

// Invalidate invalidates key after the caller's own store committed a change: Write without the store
// step. It goes on even if ctx is done, within the write timeout.
func (w *WriteAround) Invalidate(ctx context.Context, key string) {
	c := w.c
	k := w.prefix + key
	ctx, cancel := clientOpCtx(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	c.marks.begin(k, true)
	if !c.waInvalidate(ctx, k, w.s.tombstone) {
		c.metrics.fallback("invalidate")
		c.dirtyAdd(k, w.s.tombstone)
	} else if c.dirtyHas(k) {
		c.dirtyResolve(ctx, k)
	}
	c.marks.ack(k, 0, true, time.Duration(c.localTTL.Load()))
}

// waInvalidate writes k's tombstone and reports whether Redis took it.
func (c *Client) waInvalidate(ctx context.Context, k string, tombstone time.Duration) bool {
	rc, err := c.Rueidis()
	if err != nil {
		return false
	}
	start := time.Now()
	err = rc.Do(ctx, waTombstoneCmd(rc, k, tombstone)).Error()
	c.metrics.observe("invalidate", start)
	if err != nil {
		c.Failed(ctx, err)
		return false
	}
	return true
}

func waTombstoneCmd(rc rueidis.Client, k string, tombstone time.Duration) rueidis.Completed {
	return rc.B().Set().Key(k).Value(rtTombstoneTag).Px(max(tombstone, time.Millisecond)).Build()
}
