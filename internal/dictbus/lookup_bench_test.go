package dictbus_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
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
// Payers rotate over many natural persons so their buckets (100) do not
// limit; A is of category A (50,000 tokens, 25,000/min), which bounds the
// lookups of a whole run: keep -benchtime at a fixed count, e.g.
// -benchtime=10000x (see the report for the sustained rate it allows).
func BenchmarkLookup(b *testing.B) {
	w := newFullWorld(b, fullOpts{now: time.Now, limiters: 1_000_000, entryCache: true, simWorkers: 32})
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

// lookMeasure runs op b.N times from 8 goroutines per CPU and reports
// throughput and latency percentiles.
func lookMeasure(b *testing.B, op func() error) {
	b.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
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
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "lookups/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(failed.Load()), "errors")
}
