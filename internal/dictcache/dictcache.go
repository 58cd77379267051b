// Package dictcache fits cachelayer's generic strategies and limiters to the
// small interfaces dict declares (EntryCache, Buckets), so that main and the
// end-to-end tests wire the same thing.
package dictcache

import (
	"context"
	"time"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
)

// EntryCache gives dict the three cachelayer strategies it uses for this
// PSP's own entries, over one key prefix and one codec: read-through for
// reads, write-through for updates, write-around for creates and deletes.
// It also remembers that a key has no entry here, which is what most
// lookups find (they are of other participants' keys).
type EntryCache struct {
	rt *cachelayer.ReadThrough[cachedEntry]
	wt *cachelayer.WriteThrough[cachedEntry]
	wa *cachelayer.WriteAround
}

// cachedEntry is what the cache holds for a key: the entry, or the
// participant whose database had none (the read could see only that
// participant's rows, so the absence holds for it alone).
type cachedEntry struct {
	Entry     *dict.Entry `json:"e,omitempty"`
	AbsentFor string      `json:"a,omitempty"`
}

// entryCachePrefix names the keys; "2" since they hold a cachedEntry
// rather than a bare entry (the older keys are never read and expire).
const entryCachePrefix = "dict:entry2:"

var _ dict.EntryCache = (*EntryCache)(nil)

// NewEntryCache caches entries, and absences, for ttl on c.
func NewEntryCache(c *cachelayer.Client, ttl time.Duration) *EntryCache {
	opts := []cachelayer.CacheOption{cachelayer.WithCacheTTL(ttl), cachelayer.WithSharedValues()}
	return &EntryCache{
		rt: cachelayer.NewReadThrough[cachedEntry](c, entryCachePrefix, nil, opts...),
		wt: cachelayer.NewWriteThrough[cachedEntry](c, entryCachePrefix, opts...),
		wa: cachelayer.NewWriteAround(c, entryCachePrefix, opts...),
	}
}

// Get implements [dict.EntryCache]. An absence is cached with version 0,
// below every write's, so that any write replaces it.
func (c *EntryCache) Get(ctx context.Context, key, participant string, load func(context.Context) (dict.Entry, bool, error)) (dict.Entry, bool, error) {
	v, err := c.rt.GetWith(ctx, key, func(ctx context.Context, _ string) (cachedEntry, int64, error) {
		e, found, err := load(ctx)
		if err != nil {
			return cachedEntry{}, 0, err
		}
		if !found {
			return cachedEntry{AbsentFor: participant}, 0, nil
		}
		return cachedEntry{Entry: &e}, e.UpdatedAt.UnixNano(), nil
	})
	switch {
	case err != nil:
		return dict.Entry{}, false, err
	case v.Entry != nil:
		return *v.Entry, true, nil
	case v.AbsentFor == participant:
		return dict.Entry{}, false, nil
	default:
		// Absent for another participant of this instance: this one's
		// rows are read, not cached (the key is not absent from the cache).
		return load(ctx)
	}
}

// Put implements [dict.EntryCache].
func (c *EntryCache) Put(ctx context.Context, key string, e dict.Entry, version int64) {
	// The write-through strategy never leaves a stale value when the cache
	// fails (it tombstones the key, or remembers it as dirty), so its error
	// is the cache's business, not the caller's: the database has committed.
	_ = c.wt.Put(ctx, key, cachedEntry{Entry: &e}, version)
}

// Invalidate implements [dict.EntryCache].
func (c *EntryCache) Invalidate(ctx context.Context, key string) { c.wa.Invalidate(ctx, key) }

// Buckets adapts cachelayer's token bucket to dict's anti-scanning policy.
type Buckets struct{ TB *cachelayer.TokenBucket }

var (
	_ dict.Buckets     = Buckets{}
	_ dict.BucketTaker = Buckets{}
)

func params(p dict.BucketParams) cachelayer.BucketParams {
	return cachelayer.BucketParams{Capacity: p.Capacity, RefillTokens: p.RefillTokens, RefillPeriod: p.RefillPeriod}
}

func decision(d cachelayer.Decision, err error) (dict.BucketDecision, error) {
	return dict.BucketDecision{Allowed: d.Allowed, Balance: d.Balance, RetryAfter: d.RetryAfter}, err
}

// Check implements [dict.Buckets].
func (b Buckets) Check(ctx context.Context, key string, p dict.BucketParams, min float64) (dict.BucketDecision, error) {
	return decision(b.TB.Check(ctx, key, params(p), min))
}

// Take implements [dict.BucketTaker]: check and deduct in one Redis call.
func (b Buckets) Take(ctx context.Context, key string, p dict.BucketParams, cost float64) (dict.BucketDecision, error) {
	return decision(b.TB.Take(ctx, key, params(p), cost))
}

// Charge implements [dict.Buckets].
func (b Buckets) Charge(ctx context.Context, key string, p dict.BucketParams, cost float64) (dict.BucketDecision, error) {
	return decision(b.TB.Charge(ctx, key, params(p), cost))
}

// Credit implements [dict.Buckets].
func (b Buckets) Credit(ctx context.Context, key string, p dict.BucketParams, amount float64) (dict.BucketDecision, error) {
	return decision(b.TB.Credit(ctx, key, params(p), amount))
}
