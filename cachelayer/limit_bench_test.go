package cachelayer_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// The limiters' decisions per second with 32 concurrent callers, against the local Redis (goal: 20,000/s
// each on a 2-core machine). Keys are spread over 10,000 payers/clients; limits are generous, so the
// figures are of the allowed path (a refusal costs the same round trip).

const limitBenchCallers = 32

func limitBenchParallel(b *testing.B, decide func(ctx context.Context, key string) error) {
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = limitTestKey(b, strconv.Itoa(i))
	}
	ctx := context.Background()
	b.SetParallelism((limitBenchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := decide(ctx, keys[rand.IntN(len(keys))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkTokenBucketTake(b *testing.B) {
	tb, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(limitRedis(b, "")))
	if err != nil {
		b.Fatal(err)
	}
	p := cachelayer.BucketParams{Capacity: 1000, RefillTokens: 20, RefillPeriod: time.Minute}
	limitBenchParallel(b, func(ctx context.Context, key string) error {
		_, err := tb.Take(ctx, key, p, 1)
		return err
	})
}

func BenchmarkSlidingWindowAllow(b *testing.B) {
	sw, err := cachelayer.NewSlidingWindow(cachelayer.FixedRedis(limitRedis(b, "")), 100, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	limitBenchParallel(b, func(ctx context.Context, key string) error {
		_, err := sw.Allow(ctx, key)
		return err
	})
}

func BenchmarkRateLimiterAllow(b *testing.B) {
	for _, backend := range []struct {
		name string
		s    func(b *testing.B) cachelayer.GCRAScripter
	}{
		{"go-redis", func(b *testing.B) cachelayer.GCRAScripter { return limitGCRAClient(b, "") }},
		{"rueidis", func(b *testing.B) cachelayer.GCRAScripter {
			return cachelayer.NewRueidisScripter(cachelayer.FixedRedis(limitRedis(b, "")))
		}},
	} {
		b.Run(backend.name, func(b *testing.B) {
			l, err := cachelayer.NewIPRateLimiter(backend.s(b), cachelayer.RatePerSecond(1000))
			if err != nil {
				b.Fatal(err)
			}
			limitBenchParallel(b, func(ctx context.Context, key string) error {
				_, err := l.Allow(ctx, key)
				return err
			})
		})
	}
}

func BenchmarkLocalTokenBucketTake(b *testing.B) {
	tb, err := cachelayer.NewLocalTokenBucket()
	if err != nil {
		b.Fatal(err)
	}
	p := cachelayer.BucketParams{Capacity: 1000, RefillTokens: 20, RefillPeriod: time.Minute}
	limitBenchParallel(b, func(ctx context.Context, key string) error {
		_, err := tb.Take(ctx, key, p, 1)
		return err
	})
}
