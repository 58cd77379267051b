package dictbus_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// BenchmarkLookup measures LookupKey through the whole path: A's server
// (auth, the request limiters set high enough not to refuse, the handler),
// core-dict's anti-scanning buckets on Redis, and for keys of other
// participants the Pulsar request/reply to the simulated DICT (its own
// buckets, its database) and back. The services run on the real clock, so
// the buckets refill as in production. Sub-benchmarks:
//
//   - OwnKey: the baseline, A's own keys, answered from A's data (the
//     entry cache on Redis) and never sent;
//   - Uncached: B's keys of natural persons, which must never be cached:
//     every lookup goes to the directory;
//   - Cached: B's keys of legal persons, which the directory cache keeps
//     up to 180 s: after the first lookup of each, answered from Redis.
//
// The limiters are sized so that they never refuse, and the benchmark
// fails if one does: it measures the path, not a limiter. Payers rotate
// over 4,096 natural persons, so no payer's bucket (100 tokens) gets near
// empty; A is of category A (50,000 tokens, 25,000/min) at core-dict and at
// the simulated DICT, and only lookups sent to the DICT are charged to it
// (Uncached's, and the first of each cached key), so a run stays within
// the bucket's capacity up to -benchtime=45000x. At a sustained rate the
// bucket would bound lookups that reach the DICT at 25,000/min (≈ 417/s):
// BCB's limit for a category A participant, not a property of the path.
//
// The outbox relays poll at production's interval (1 s): lookups write no
// outbox rows, and a 20 ms poll of 16 lanes per stack would take CPU from
// the path being measured. Callers: 8 goroutines per CPU, or
// LOOKUP_BENCH_CALLERS_PER_CPU (as many payments being prepared at once).
func BenchmarkLookup(b *testing.B) {
	w := newFullWorld(b, fullOpts{now: time.Now, limiters: 1_000_000, entryCache: true, simWorkers: 32, relayPoll: time.Second})
	const nKeys = 256
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}
	b.Cleanup(tr.CloseIdleConnections)
	tokA, err := rpc.IssueToken(apiSecret, "payments", ispbA, []string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeLookup}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	clientA := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearer{tokA, tr}}, w.a.srv.URL)

	own := createKeys(b, w.a, nKeys, func(i int) (*dictv1.Owner, string) {
		return person(newCPF(), "Dono Proprio"), fmt.Sprintf("own-%s-%d@example.com.br", randDigits(6), i)
	})
	natural := createKeys(b, w.b, nKeys, func(i int) (*dictv1.Owner, string) {
		return person(newCPF(), "Pessoa Fisica"), fmt.Sprintf("pf-%s-%d@example.com.br", randDigits(6), i)
	})
	legal := createKeys(b, w.b, nKeys, func(i int) (*dictv1.Owner, string) {
		return company(newCNPJ(), "Empresa"), fmt.Sprintf("pj-%s-%d@example.com.br", randDigits(6), i)
	})
	payers := make([]string, 4096)
	for i := range payers {
		payers[i] = newCPF()
	}
	var next atomic.Int64
	lookup := func(keys []string) func() error {
		return func() error {
			n := next.Add(1)
			_, err := clientA.LookupKey(context.Background(), &dictv1.LookupKeyRequest{
				Key: keys[int(n)%len(keys)], PayerId: payers[int(n)%len(payers)], EndToEndId: endToEndID(ispbA)})
			return err
		}
	}
	// The entry cache leaves a short tombstone after a create; let it pass
	// so that OwnKey measures the steady state, and warm the cache.
	time.Sleep(6 * time.Second)
	for _, k := range own {
		if _, err := w.a.client.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: k}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("OwnKey", func(b *testing.B) { lookMeasure(b, lookup(own)) })
	b.Run("Uncached", func(b *testing.B) { lookMeasure(b, lookup(natural)) })
	b.Run("Cached", func(b *testing.B) { lookMeasure(b, lookup(legal)) })
	b.Logf("directory get_entry answered: ok %d, RateLimited %d", w.simCount(b, "get_entry", "ok"), w.simCount(b, "get_entry", "RateLimited"))
	if n := w.simCount(b, "get_entry", "RateLimited"); n > 0 {
		b.Errorf("the simulated DICT's buckets refused %d lookups: the run measured a limiter, not the path", n)
	}
}

// createKeys registers n EMAIL keys at p, each on an account of its own,
// and waits until the directory has confirmed them all.
func createKeys(b *testing.B, p *pspStack, n int, gen func(i int) (*dictv1.Owner, string)) []string {
	b.Helper()
	keys := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		owner, key := gen(i)
		keys[i] = key
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := p.client.CreateKey(context.Background(), &dictv1.CreateKeyRequest{RequestId: uuid.NewString(),
				KeyType: dictv1.KeyType_KEY_TYPE_EMAIL, Key: key, Account: account(p.ispb), Owner: owner}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	deadline := 1200
	for {
		var active int
		if err := p.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM entries WHERE key = ANY($1) AND status = 'ACTIVE'`, keys).Scan(&active); err != nil {
			b.Fatal(err)
		}
		if active == n {
			return keys
		}
		if deadline--; deadline == 0 {
			b.Fatalf("%s: %d of %d keys ACTIVE", p.ispb, active, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookMeasure runs op b.N times from [callersPerCPU] goroutines per CPU and reports
// throughput and latency percentiles; any failure (a limiter's refusal
// included) fails the benchmark.
func lookMeasure(b *testing.B, op func() error) {
	b.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	b.SetParallelism(callersPerCPU())
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t := time.Now()
			if err := op(); err != nil {
				if failed.Add(1) == 1 {
					b.Error(connect.CodeOf(err), err)
				}
				continue
			}
			mine = append(mine, time.Since(t))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "lookups/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(failed.Load()), "errors")
	// CPU time of this process (client, core-dict stacks, dictsim) per
	// lookup: unlike lookups/s, it hardly depends on how loaded the machine
	// is. PostgreSQL, Redis and Pulsar's CPU is not in it.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// callersPerCPU is LOOKUP_BENCH_CALLERS_PER_CPU, by default 8: the
// goroutines per CPU that look keys up at once.
func callersPerCPU() int {
	if n, err := strconv.Atoi(os.Getenv("LOOKUP_BENCH_CALLERS_PER_CPU")); err == nil && n > 0 {
		return n
	}
	return 8
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
