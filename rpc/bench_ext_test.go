package rpc_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// floorHandler is the transport's floor: a Connect handler that does
// nothing but answer, with no interceptor, no auth and no database.
type floorHandler struct {
	dictv1connect.UnimplementedCoreDictServiceHandler
}

func (floorHandler) GetKey(context.Context, *dictv1.GetKeyRequest) (*dictv1.GetKeyResponse, error) {
	return &dictv1.GetKeyResponse{}, nil
}

// floorNsPerOp is the floor measured in this run, so the other
// sub-benchmarks can report themselves as a multiple of it.
var floorNsPerOp float64

// BenchmarkServer measures CreateKey and GetKey through the real server
// (auth, interceptors, validation, the Redis cache) and the real database,
// GetKey also on an instance without the cache, beside the bare
// Connect floor, all over the same transport (Connect protocol, binary
// protobuf, HTTP/1.1 on loopback) in one run. Each reports ops/s, p50 and
// p99 latency, and x-floor: its ns/op over the floor's.
func BenchmarkServer(b *testing.B) {
	mux := http.NewServeMux()
	mux.Handle(dictv1connect.NewCoreDictServiceHandler(floorHandler{}))
	floor := httptest.NewServer(mux)
	defer floor.Close()
	floorClient := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: http1Transport}, floor.URL)
	c := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok: token(b, partA), rt: http1Transport}}, env.server.URL)

	b.Run("Floor", func(b *testing.B) {
		measure(b, func() error {
			_, err := floorClient.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: "+5561988880000"})
			return err
		})
		floorNsPerOp = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	existing := make([]string, 64)
	for i := range existing {
		// ACTIVE, under the key the directory generated.
		existing[i] = mustCreate(b, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF()))).GetKey()
	}
	// A create leaves a short tombstone in the cache (write-around, 5 s) so
	// that no racing read can cache a value from before it; wait it out so
	// GetKey measures the steady state, then warm both caches.
	time.Sleep(6 * time.Second)
	for _, k := range existing {
		if _, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: k}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("GetKey", func(b *testing.B) { benchGetKeys(b, c, existing) })
	// The same GetKey on an instance without Redis: every read goes to
	// PostgreSQL. Its ratio to GetKey above is the cache's gain.
	plain, err := newStack(env.db, "")
	if err != nil {
		b.Fatal(err)
	}
	defer plain.close()
	pc := dictv1connect.NewCoreDictServiceClient(&http.Client{Transport: bearerOver{tok: token(b, partA), rt: http1Transport}}, plain.server.URL)
	b.Run("GetKeyNoCache", func(b *testing.B) { benchGetKeys(b, pc, existing) })
	// CreateKey's answer (PENDING): the entry, its audit row and its
	// DirectoryRequest in one transaction; the directory's round trip is not
	// in it.
	b.Run("CreateKey", func(b *testing.B) {
		measure(b, func() error {
			_, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
			return err
		})
		reportFloor(b)
	})
}

// benchGetKeys reads keys round-robin through c and reports against the floor.
func benchGetKeys(b *testing.B, c dictv1connect.CoreDictServiceClient, keys []string) {
	var mu sync.Mutex
	i := 0
	measure(b, func() error {
		mu.Lock()
		k := keys[i%len(keys)]
		i++
		mu.Unlock()
		_, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: k})
		return err
	})
	reportFloor(b)
}

func reportFloor(b *testing.B) {
	if floorNsPerOp > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/floorNsPerOp, "x-floor")
	}
}

// measure runs op b.N times from 4 goroutines per CPU and reports
// throughput and latency percentiles.
func measure(b *testing.B, op func() error) {
	b.Helper()
	b.ReportAllocs()
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t := time.Now()
			if err := op(); err != nil {
				b.Error(connect.CodeOf(err), err)
				return
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
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
