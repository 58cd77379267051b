package cachelayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// Codec encodes cached values. [JSONCodec] is the default.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec encodes values with encoding/json.
type JSONCodec struct{}

// Marshal implements [Codec].
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// CacheOption configures a cache strategy.
type CacheOption func(*cacheSettings)

type cacheSettings struct {
	shared    bool
	ttl       time.Duration
	tombstone time.Duration
	lockTTL   time.Duration
	wait      time.Duration
	codec     Codec
}

func cacheSettingsFor(c *Client, opts []CacheOption) cacheSettings {
	s := cacheSettings{
		ttl:       c.cfg.EntryTTL,
		tombstone: 5 * time.Second,
		lockTTL:   5 * time.Second,
		codec:     JSONCodec{},
	}
	for _, o := range opts {
		o(&s)
	}
	if s.ttl <= 0 {
		s.ttl = 300 * time.Second
	}
	if s.wait <= 0 {
		s.wait = s.lockTTL + time.Second
	}
	c.noteLocalTTL(s.ttl)
	return s
}

// WithCacheTTL sets how long [ReadThrough] and [WriteThrough] keep values, in Redis and in the client-side
// cache (default: the client's [Config.EntryTTL]).
func WithCacheTTL(d time.Duration) CacheOption { return func(s *cacheSettings) { s.ttl = d } }

// WithCodec sets how values are encoded (default [JSONCodec]). Strategies that share keys must share it.
func WithCodec(c Codec) CacheOption { return func(s *cacheSettings) { s.codec = c } }

// WithTombstoneTTL sets how long an invalidation keeps a key from being cached again (default 5 s): long
// enough for a write-through SET that lost a race with a delete to arrive and be refused.
func WithTombstoneTTL(d time.Duration) CacheOption {
	return func(s *cacheSettings) { s.tombstone = d }
}

// WithSharedValues lets a [ReadThrough] decode each client-side cached copy once and return that same
// decoded value to every caller until the copy changes, instead of decoding on every hit: a client-side hit
// then costs well under a microsecond instead of a decode. Only for a T whose reference fields (slices,
// maps, pointers) callers never modify: they are shared.
func WithSharedValues() CacheOption { return func(s *cacheSettings) { s.shared = true } }

// Loader reads key's value from the store with its version (for example the row's updated_at in ns). The
// version orders cached values: an older one never replaces a newer one (see [WriteThrough]).
type Loader[T any] func(ctx context.Context, key string) (value T, version int64, err error)

// ReadThrough is the read-through strategy with client-side caching, for values this PSP owns (its own
// entries). Get answers, in order, from the client-side cache (no network), from Redis, or from the store;
// a value read from the store is put in Redis with the TTL under a fill lease (below). When Redis fails,
// Get answers from the store without an error and counts a fallback.
//
// The keys hold one of three things, told apart by the first byte:
//
//	v<20-digit version><encoded value>   a value with its version
//	l<token>                             a fill lease: a reader is loading the value from the store
//	t                                    a tombstone: the store changed and the value may not be cached yet
//
// Fill leases: on a miss the reader first sets a lease (SET NX PX, 5 s), then reads the store, then
// replaces the lease by the value only if its lease is still there (Lua). Any write in between
// ([WriteThrough] SET, [WriteAround] tombstone) replaces the lease, so a slow reader can never put back a
// value older than a write that happened while it read, and a delete can never be undone by a fill.
//
// The writer never reads its old value: Redis pushes invalidations asynchronously, so right after this
// client writes a key its own client-side cache may still hold the previous value for a moment. Each write
// marks the key (see [Client]) until this client has proof that its cached copy is not older than the
// write: a read answered by Redis after the write was acknowledged (the client-side copy is then that
// answer), or a cached copy whose version is at least the written one. While a write is in flight reads
// bypass the client-side cache; afterwards a cached copy that is not provably fresh is re-read from Redis.
// Invalidation pushes alone do not clear marks: rueidis pipelines over several connections and an
// invalidation of an earlier change can arrive after the write's acknowledgement on another connection.
// Marks expire with the longest client-side TTL, by which time every older copy has expired anyway.
type ReadThrough[T any] struct {
	c      *Client
	prefix string
	load   Loader[T]
	s      cacheSettings
	memo   *rtMemo[T] // with WithSharedValues
}

// NewReadThrough returns a read-through cache of the keys under prefix, reading the store with load (which
// may be nil if every call uses [ReadThrough.GetWith]).
func NewReadThrough[T any](c *Client, prefix string, load Loader[T], opts ...CacheOption) *ReadThrough[T] {
	r := &ReadThrough[T]{c: c, prefix: prefix, load: load, s: cacheSettingsFor(c, opts)}
	if r.s.shared {
		r.memo = newRTMemo[T]()
	}
	return r
}

// Get returns key's value from the cache or, on a miss or a Redis failure, from the store.
func (r *ReadThrough[T]) Get(ctx context.Context, key string) (T, error) {
	return r.GetWith(ctx, key, r.load)
}

// GetWith is Get with its own loader, for callers whose store read depends on the call.
func (r *ReadThrough[T]) GetWith(ctx context.Context, key string, load Loader[T]) (T, error) {
	var zero T
	if load == nil {
		return zero, errors.New("cachelayer: ReadThrough.Get without a loader")
	}
	c := r.c
	k := r.prefix + key
	if c.dirtyHas(k) && !c.dirtyResolve(ctx, k) {
		return rtFallback(ctx, c, key, load)
	}
	rc, err := c.Rueidis()
	if err != nil {
		return rtFallback(ctx, c, key, load)
	}
	var (
		mark   clientMarkView
		marked bool
	)
	if c.marks.n.Load() > 0 {
		mark, marked = c.marks.view(k)
	}
	start := time.Now()
	var res rueidis.RedisResult
	cached := !marked || mark.pending == 0
	if cached {
		res = rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), r.s.ttl)
	} else {
		res = rc.Do(ctx, rc.B().Get().Key(k).Build())
	}
	raw, err := res.AsBytes()
	if err != nil && !rueidis.IsRedisNil(err) {
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
		c.Failed(ctx, err)
		return rtFallback(ctx, c, key, load)
	}
	hit := res.IsCacheHit()
	if !hit {
		c.metrics.observe("get", start)
	}
	kind, version, payload := rtParse(raw)
	if marked && mark.pending == 0 {
		switch {
		case !hit:
			c.marks.clear(k, mark.seq) // answered by Redis after the write: the local copy is this answer
		case kind == rtValue && !mark.dropAll && version >= mark.version:
			c.marks.clear(k, mark.seq) // the local copy is not older than the write
		default:
			// Possibly what this client's own write replaced, its invalidation still on the way: ask Redis.
			start = time.Now()
			raw, err = rc.Do(ctx, rc.B().Get().Key(k).Build()).AsBytes()
			if err != nil && !rueidis.IsRedisNil(err) {
				if ctx.Err() != nil {
					return zero, ctx.Err()
				}
				c.Failed(ctx, err)
				return rtFallback(ctx, c, key, load)
			}
			c.metrics.observe("get", start)
			hit, cached = false, false
			kind, version, payload = rtParse(raw)
		}
	}
	if kind == rtValue {
		if r.memo != nil && cached {
			if v, ok := r.memo.get(k, raw); ok {
				if hit {
					c.metrics.hitsLocal.Inc()
				} else {
					c.metrics.hitsRedis.Inc()
				}
				return v, nil
			}
		}
		var v T
		if err := r.s.codec.Unmarshal(payload, &v); err == nil {
			if r.memo != nil && cached {
				r.memo.put(k, raw, v)
			}
			if hit {
				c.metrics.hitsLocal.Inc()
			} else {
				c.metrics.hitsRedis.Inc()
			}
			return v, nil
		}
		// An undecodable value (another codec, an older shape) is a miss; the fill below cannot replace
		// it (no lease), so it stays until a write or its TTL.
	}
	c.metrics.misses.Inc()
	return r.rtFill(ctx, rc, k, key, kind == rtAbsent, load)
}

// rtFill loads key from the store and, when the key was absent, caches it under a fill lease. The lease
// and the fill are writes of this client like any other: the key is marked until this client's own
// client-side copy of the absent key is gone.
func (r *ReadThrough[T]) rtFill(ctx context.Context, rc rueidis.Client, k, key string, absent bool, load Loader[T]) (T, error) {
	c := r.c
	if !absent {
		v, _, err := load(ctx, key)
		return v, err
	}
	c.marks.begin(k, false)
	filled := int64(0)
	defer func() { c.marks.ack(k, filled, false, time.Duration(c.localTTL.Load())) }()
	lease := rtLeaseTag + rtToken()
	lctx, cancel := clientOpCtx(ctx, c.cfg.WriteTimeout)
	start := time.Now()
	err := rc.Do(lctx, rc.B().Set().Key(k).Value(lease).Nx().Px(rtLeaseTTL).Build()).Error()
	c.metrics.observe("lease", start)
	if err != nil {
		if !rueidis.IsRedisNil(err) {
			c.Failed(lctx, err)
		}
		lease = "" // someone else is filling or wrote, or Redis failed: just read the store
	}
	cancel()
	v, version, err := load(ctx, key)
	if err != nil {
		if lease != "" {
			rtReleaseLease(c, rc, k, lease)
		}
		return v, err
	}
	if lease == "" {
		return v, nil
	}
	payload, err := r.s.codec.Marshal(v)
	if err != nil || version < 0 {
		rtReleaseLease(c, rc, k, lease)
		return v, nil
	}
	fctx, cancel := clientOpCtx(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	start = time.Now()
	err = rtFillScript.Exec(fctx, rc, []string{k}, []string{lease, rtEncode(version, payload), rtMillis(r.s.ttl)}).Error()
	c.metrics.observe("fill", start)
	if err != nil {
		c.Failed(fctx, err)
	} else {
		filled = version
	}
	return v, nil
}

// rtMemo holds, per key, the decoded value of the client-side cached copy it was decoded from. rueidis
// hands out the same bytes for every hit on one cached copy, so the bytes' address and length identify it;
// the memo keeps those bytes reachable, so the address cannot be reused by other bytes while it is there.
// A sync.Map: read on every hit, written once per copy.
type rtMemo[T any] struct {
	m sync.Map // key → *rtMemoEntry[T]
	n atomic.Int64
}

type rtMemoEntry[T any] struct {
	data *byte
	n    int
	v    T
}

// rtMemoMax bounds the memo; a full memo is emptied (the values decode again on their next hit).
const rtMemoMax = 1 << 17

func newRTMemo[T any]() *rtMemo[T] { return &rtMemo[T]{} }

func (m *rtMemo[T]) get(k string, raw []byte) (T, bool) {
	if e, ok := m.m.Load(k); ok {
		if e := e.(*rtMemoEntry[T]); e.data == unsafe.SliceData(raw) && e.n == len(raw) {
			return e.v, true
		}
	}
	var zero T
	return zero, false
}

func (m *rtMemo[T]) put(k string, raw []byte, v T) {
	if m.n.Load() >= rtMemoMax {
		m.m.Clear()
		m.n.Store(0)
	}
	if _, loaded := m.m.Swap(k, &rtMemoEntry[T]{data: unsafe.SliceData(raw), n: len(raw), v: v}); !loaded {
		m.n.Add(1)
	}
}

// rtFallback answers from the store because Redis cannot be used.
func rtFallback[T any](ctx context.Context, c *Client, key string, load Loader[T]) (T, error) {
	c.metrics.fallback("get")
	v, _, err := load(ctx, key)
	return v, err
}

// rtReleaseLease drops a fill lease that will not be used, if it is still ours.
func rtReleaseLease(c *Client, rc rueidis.Client, k, lease string) {
	ctx, cancel := clientOpCtx(context.Background(), c.cfg.WriteTimeout)
	defer cancel()
	if err := lockUnlockScript.Exec(ctx, rc, []string{k}, []string{lease}).Error(); err != nil {
		c.Failed(ctx, err)
	}
}

// rtFillScript replaces the caller's fill lease (ARGV[1]) by the value (ARGV[2]) for ARGV[3] ms.
var rtFillScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`)

// The kinds of what a cache key holds.
const (
	rtAbsent = iota
	rtValue
	rtLease
	rtTombstone
	rtUnknown
)

const (
	rtValueTag     = "v"
	rtLeaseTag     = "l"
	rtTombstoneTag = "t"
	rtVersionLen   = 20 // digits of the largest int64, zero-padded so that versions compare as strings in Lua
	rtLeaseTTL     = 5 * time.Second
)

// rtEncode is the stored form of a value: its tag, its version and its encoding.
func rtEncode(version int64, payload []byte) string {
	b := make([]byte, 0, 1+rtVersionLen+len(payload))
	b = append(b, rtValueTag...)
	b = append(b, rtVersion(version)...)
	b = append(b, payload...)
	return string(b)
}

func rtVersion(version int64) string {
	return fmt.Sprintf("%0*d", rtVersionLen, version)
}

// rtParse tells what raw (nil for an absent key) holds.
func rtParse(raw []byte) (kind int, version int64, payload []byte) {
	switch {
	case raw == nil:
		return rtAbsent, 0, nil
	case len(raw) > rtVersionLen && raw[0] == rtValueTag[0]:
		var v int64
		for _, d := range raw[1 : 1+rtVersionLen] {
			if d < '0' || d > '9' {
				return rtUnknown, 0, nil
			}
			v = v*10 + int64(d-'0')
		}
		return rtValue, v, raw[1+rtVersionLen:]
	case len(raw) > 0 && raw[0] == rtLeaseTag[0]:
		return rtLease, 0, nil
	case len(raw) > 0 && raw[0] == rtTombstoneTag[0]:
		return rtTombstone, 0, nil
	}
	return rtUnknown, 0, nil
}

func rtToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func rtMillis(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}
