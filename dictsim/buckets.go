package dictsim

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/lbpay-lab/core-dict/dict"
)

// memoryBuckets is the anti-scanning token-bucket store of one simulator
// instance ([dict.Buckets] in process memory, on the simulator's clock).
// The real DICT keeps its buckets centrally; a simulator instance keeps
// its own, which is enough for local runs and tests.
type memoryBuckets struct {
	now func() time.Time
	mu  sync.Mutex
	b   map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newMemoryBuckets(now func() time.Time) *memoryBuckets {
	return &memoryBuckets{now: now, b: map[string]*bucket{}}
}

// refill returns key's bucket with the tokens earned since it was last touched.
func (m *memoryBuckets) refill(key string, p dict.BucketParams) *bucket {
	now := m.now()
	b, ok := m.b[key]
	if !ok {
		b = &bucket{tokens: p.Capacity, at: now}
		m.b[key] = b
		return b
	}
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(p.Capacity, b.tokens+p.RefillTokens*float64(el)/float64(p.RefillPeriod))
		b.at = now
	}
	return b
}

func decision(b *bucket, p dict.BucketParams, min float64) dict.BucketDecision {
	d := dict.BucketDecision{Allowed: b.tokens >= min, Balance: b.tokens}
	if !d.Allowed {
		missing := min - b.tokens
		d.RetryAfter = time.Duration(math.Ceil(missing / p.RefillTokens * float64(p.RefillPeriod)))
	}
	return d
}

func (m *memoryBuckets) Check(_ context.Context, key string, p dict.BucketParams, min float64) (dict.BucketDecision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return decision(m.refill(key, p), p, min), nil
}

func (m *memoryBuckets) Charge(_ context.Context, key string, p dict.BucketParams, cost float64) (dict.BucketDecision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.refill(key, p)
	b.tokens -= cost
	return decision(b, p, 0), nil
}

func (m *memoryBuckets) Credit(_ context.Context, key string, p dict.BucketParams, amount float64) (dict.BucketDecision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.refill(key, p)
	b.tokens = math.Min(p.Capacity, b.tokens+amount)
	return decision(b, p, 0), nil
}
