package cachelayer

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

//go:embed slidingwindow.lua
var swSource string

var swScript = rueidis.NewLuaScript(swSource)

// SlidingWindow allows at most limit requests per key in any window of the given length: a sliding-window
// log in a Redis sorted set (one member per request, scored with its time), trimmed on every Allow and
// expiring a window after the last request. Unlike a fixed window it has no burst at the window's edge;
// it costs a member per request, so it suits small limits (per-client request rates), not the DICT's
// buckets of 50,000. Time is the Redis server's clock unless [WithLimitClock] is given. While Redis is
// unavailable it decides with a [LocalSlidingWindow] of the same limit and window (see localbucket.go).
type SlidingWindow struct {
	src    RedisSource
	cfg    limitConfig
	base   *limitBase
	local  *LocalSlidingWindow
	limit  string
	window string
	n      int64
	// swID and swSeq make each request's member unique across instances.
	swID  string
	swSeq atomic.Uint64
}

func swValidate(limit int64, window time.Duration) error {
	if limit < 1 || window < time.Millisecond {
		return fmt.Errorf("%w: sliding window of %d per %v: the limit must be at least 1 and the window at least 1ms", ErrLimitParams, limit, window)
	}
	return nil
}

// NewSlidingWindow returns a sliding-window limiter of limit requests per window (in whole milliseconds)
// on the Redis of src.
func NewSlidingWindow(src RedisSource, limit int64, window time.Duration, opts ...LimitOption) (*SlidingWindow, error) {
	cfg, err := newLimitConfig("sliding_window", "limit:sw:", opts)
	if err != nil {
		return nil, err
	}
	if err := swValidate(limit, window); err != nil {
		return nil, err
	}
	base, err := newLimitBase(cfg, src)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("cachelayer: sliding window id: %w", err)
	}
	return &SlidingWindow{
		src: src, cfg: cfg, base: base, local: newLocalSlidingWindow(limit, window, cfg), n: limit,
		limit: strconv.FormatInt(limit, 10), window: strconv.FormatInt(window.Milliseconds(), 10),
		swID: hex.EncodeToString(id) + ":",
	}, nil
}

// Allow records a request for key and reports whether it is within the limit. A refused request is not
// recorded.
func (w *SlidingWindow) Allow(ctx context.Context, key string) (bool, error) {
	d, err := w.Decide(ctx, key)
	return d.Allowed, err
}

// Decide is [SlidingWindow.Allow] with the details: Balance is the number of requests still allowed in the
// window, RetryAfter (when refused) the time until the oldest request leaves it.
func (w *SlidingWindow) Decide(ctx context.Context, key string) (Decision, error) {
	d, err := limitRun(ctx, w.base,
		func(ctx context.Context) (Decision, error) { return w.redis(ctx, key, "allow") },
		func() Decision { return w.local.apply(key, true) })
	if err == nil {
		w.base.counters.decided(d.Allowed)
	}
	return d, err
}

// Peek reports whether Allow would allow a request for key now, recording nothing.
func (w *SlidingWindow) Peek(ctx context.Context, key string) (Decision, error) {
	return limitRun(ctx, w.base,
		func(ctx context.Context) (Decision, error) { return w.redis(ctx, key, "peek") },
		func() Decision { return w.local.apply(key, false) })
}

// Count returns the number of requests of key in the current window.
func (w *SlidingWindow) Count(ctx context.Context, key string) (int64, error) {
	d, err := w.Peek(ctx, key)
	if err != nil {
		return 0, err
	}
	return w.n - int64(d.Balance), nil
}

func (w *SlidingWindow) redis(ctx context.Context, key, op string) (Decision, error) {
	member := ""
	if op == "allow" {
		member = w.swID + strconv.FormatUint(w.swSeq.Add(1), 36)
	}
	r, err := w.src.Rueidis()
	if err != nil {
		return Decision{}, err
	}
	vals, err := swScript.Exec(ctx, r, []string{limitKey(w.cfg.prefix, key)},
		[]string{w.limit, w.window, op, w.cfg.limitNowMS(), member}).AsIntSlice()
	if err != nil {
		return Decision{}, err
	}
	if len(vals) != 3 {
		return Decision{}, fmt.Errorf("cachelayer: sliding window script returned %d values, want 3", len(vals))
	}
	return Decision{Allowed: vals[0] == 1, Balance: float64(w.n - vals[1]), RetryAfter: time.Duration(vals[2]) * time.Millisecond}, nil
}
