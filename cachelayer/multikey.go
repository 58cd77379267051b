package cachelayer

import (
	"context"
	"fmt"
)

// KeyedLimiter is a limiter that decides per key: [RateLimiter] (and [IPRateLimiter],
// [AccountRateLimiter]), [SlidingWindow] and their in-process twins.
type KeyedLimiter interface {
	// Decide counts a request of key if it is allowed.
	Decide(ctx context.Context, key string) (Decision, error)
	// Peek reports whether Decide would allow a request of key now, counting nothing.
	Peek(ctx context.Context, key string) (Decision, error)
}

// MultiKeyLimiter allows a request only when all its limiters allow it, each on its own key (the seed's
// IP + account limiter).
//
// The limiters' keys live in different Redis hash slots (and redis_rate has no multi-key script), so
// the decision cannot be one atomic step. It is two: every limiter is asked with Peek, which counts
// nothing; only when all would allow is the request counted with Decide, in order. What this guarantees:
//   - a request is never allowed unless every limiter allowed it;
//   - a limiter that refuses is never charged;
//   - a request refused because some limiter was already exhausted charges none of the others.
//
// What it does not: when concurrent requests exhaust a limiter between the Peek and the Decide (one
// round trip), the limiters before it in the list have counted a request that ends up refused. The
// error is on the strict side, and only under a race on the same key.
type MultiKeyLimiter struct {
	limiters []KeyedLimiter
	base     *limitBase
}

// NewMultiKeyLimiter combines limiters (name label multi_key); [MultiKeyLimiter.Allow] takes one key per
// limiter, in the same order.
func NewMultiKeyLimiter(limiters []KeyedLimiter, opts ...LimitOption) (*MultiKeyLimiter, error) {
	if len(limiters) == 0 {
		return nil, fmt.Errorf("%w: a multi-key limiter needs at least one limiter", ErrLimitParams)
	}
	cfg, err := newLimitConfig("multi_key", "", opts)
	if err != nil {
		return nil, err
	}
	base, err := newLimitBase(cfg, nil)
	if err != nil {
		return nil, err
	}
	return &MultiKeyLimiter{limiters: append([]KeyedLimiter(nil), limiters...), base: base}, nil
}

// Allow reports whether every limiter allows a request of its key (keys[i] for limiter i), and counts it
// in all of them when they do.
func (m *MultiKeyLimiter) Allow(ctx context.Context, keys ...string) (bool, error) {
	d, err := m.Decide(ctx, keys...)
	return d.Allowed, err
}

// Decide is [MultiKeyLimiter.Allow] with the details: Balance is the smallest of the limiters' balances,
// RetryAfter (when refused) the longest of the refusing limiters' retry-afters.
func (m *MultiKeyLimiter) Decide(ctx context.Context, keys ...string) (Decision, error) {
	if len(keys) != len(m.limiters) {
		return Decision{}, fmt.Errorf("%w: %d keys for %d limiters", ErrLimitParams, len(keys), len(m.limiters))
	}
	d, err := m.decide(ctx, keys)
	if err == nil {
		m.base.counters.decided(d.Allowed)
	}
	return d, err
}

func (m *MultiKeyLimiter) decide(ctx context.Context, keys []string) (Decision, error) {
	peeked, err := m.each(ctx, keys, KeyedLimiter.Peek, false)
	if err != nil || !peeked.Allowed {
		return peeked, err
	}
	return m.each(ctx, keys, KeyedLimiter.Decide, true)
}

// each asks every limiter in turn (all of them for a peek, so that RetryAfter covers every refusal; up
// to the first refusal for a decide) and merges the answers.
func (m *MultiKeyLimiter) each(ctx context.Context, keys []string, ask func(KeyedLimiter, context.Context, string) (Decision, error), stopAtRefusal bool) (Decision, error) {
	out := Decision{Allowed: true}
	for i, l := range m.limiters {
		d, err := ask(l, ctx, keys[i])
		if err != nil {
			return Decision{}, err
		}
		if i == 0 || d.Balance < out.Balance {
			out.Balance = d.Balance
		}
		if !d.Allowed {
			out.Allowed = false
			out.RetryAfter = max(out.RetryAfter, d.RetryAfter)
			if stopAtRefusal {
				break
			}
		}
	}
	return out, nil
}
