package cachelayer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// These tests talk to the real Redis that `scripts/deps.sh up` starts. They prove what cachelayer builds
// on: plain commands work, and rueidis' client-side cache (RESP3 CLIENT TRACKING) serves repeated reads
// locally and is invalidated by the server when another client writes the key.

const defaultRedisURL = "redis://127.0.0.1:6379/0"

func redisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return defaultRedisURL
}

// newRedisClient returns a client of the local Redis (its own connections), or fails the test saying how
// to start it.
func newRedisClient(t *testing.T) rueidis.Client {
	t.Helper()
	raw := redisURL()
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		t.Fatalf("REDIS_URL=%q: %v", raw, err)
	}
	opt.Dialer.Timeout = 3 * time.Second
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("Redis is not reachable at %s (%v): start the local services with `scripts/deps.sh up`", raw, err)
	}
	t.Cleanup(client.Close)
	return client
}

// testKey is unique per run; the hash tag keeps a test's keys in one Redis Cluster slot.
func testKey(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return "cachelayer-test:{" + hex.EncodeToString(b) + "}:" + name
}

func TestRedisSetGetDel(t *testing.T) {
	t.Parallel()
	client := newRedisClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := testKey(t, "roundtrip")
	const value = "entry:+5561912345678"

	if err := client.Do(ctx, client.B().Set().Key(key).Value(value).Ex(time.Minute).Build()).Error(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	got, err := client.Do(ctx, client.B().Get().Key(key).Build()).ToString()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if got != value {
		t.Errorf("GET %s = %q, want %q", key, got, value)
	}
	deleted, err := client.Do(ctx, client.B().Del().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("DEL %s: %v", key, err)
	}
	if deleted != 1 {
		t.Errorf("DEL %s removed %d keys, want 1", key, deleted)
	}
	if err := client.Do(ctx, client.B().Get().Key(key).Build()).Error(); !rueidis.IsRedisNil(err) {
		t.Errorf("GET %s after DEL: err = %v, want redis nil", key, err)
	}
}

func TestRedisClientSideCacheInvalidation(t *testing.T) {
	t.Parallel()
	reader := newRedisClient(t)
	writer := newRedisClient(t) // another client: its writes reach the reader only as invalidations
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := testKey(t, "cached")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		writer.Do(ctx, writer.B().Del().Key(key).Build())
	})

	set := func(v string) {
		t.Helper()
		if err := writer.Do(ctx, writer.B().Set().Key(key).Value(v).Ex(time.Minute).Build()).Error(); err != nil {
			t.Fatalf("SET %s %s: %v", key, v, err)
		}
	}
	// cachedGet reads through the reader's client-side cache.
	cachedGet := func() (value string, hit bool) {
		t.Helper()
		res := reader.DoCache(ctx, reader.B().Get().Key(key).Cache(), time.Minute)
		v, err := res.ToString()
		if err != nil {
			t.Fatalf("cached GET %s: %v", key, err)
		}
		return v, res.IsCacheHit()
	}

	set("v1")
	if v, hit := cachedGet(); v != "v1" || hit {
		t.Fatalf("first cached GET = (%q, hit %v), want (\"v1\", hit false)", v, hit)
	}
	if v, hit := cachedGet(); v != "v1" || !hit {
		t.Fatalf("second cached GET = (%q, hit %v), want (\"v1\", hit true): client-side caching is not working", v, hit)
	}

	set("v2")
	// The server pushes the invalidation to the reader's connection asynchronously: until it lands, reads
	// are still served from the local copy (v1, a hit); the first read after it goes to the server.
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, hit := cachedGet()
		if v == "v2" {
			if hit {
				t.Fatalf("first read of v2 was a cache hit; want it fetched from the server after the invalidation")
			}
			break
		}
		if v != "v1" || !hit {
			t.Fatalf("cached GET while waiting for the invalidation = (%q, hit %v), want (\"v1\", hit true)", v, hit)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cached GET still returns the stale v1 five seconds after another client wrote v2: no invalidation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v, hit := cachedGet(); v != "v2" || !hit {
		t.Fatalf("cached GET after the refresh = (%q, hit %v), want (\"v2\", hit true)", v, hit)
	}
}
