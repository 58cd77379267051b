package cachelayer_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

// benchEntry is one of the PSP's own entries as core-dict reads it: the row of the entries table.
type benchEntry struct {
	Key             string    `json:"key"`
	KeyType         string    `json:"key_type"`
	Participant     string    `json:"participant"`
	Branch          string    `json:"branch"`
	AccountNumber   string    `json:"account_number"`
	AccountType     string    `json:"account_type"`
	AccountOpenedAt time.Time `json:"account_opened_at"`
	OwnerType       string    `json:"owner_type"`
	OwnerTaxID      string    `json:"owner_tax_id"`
	OwnerName       string    `json:"owner_name"`
	OwnerTradeName  string    `json:"owner_trade_name"`
	Status          string    `json:"status"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	CID             string    `json:"cid"`
}

const benchSelect = `SELECT key, key_type, participant, branch, account_number, account_type, account_opened_at,
	owner_type, owner_tax_id, owner_name, owner_trade_name, status, created_at, updated_at, cid
	FROM entries WHERE key = $1`

// BenchmarkOwnEntryRead reads one of the PSP's own entries, one caller at a time: from rueidis' client-side
// cache (the raw bytes: what a cache hit costs), through ReadThrough.Get on a client-side hit (decoded into
// the entry on every hit, or decoded once with WithSharedValues), with a rueidis GET that skips the
// client-side cache (one Redis round trip), with a go-redis GET, and with the PostgreSQL query (on a fresh
// test database); and the JSON decode alone. Goals: a cache hit under 1 µs and at least 20x faster than the
// Redis round trip.
func BenchmarkOwnEntryRead(b *testing.B) {
	ctx := context.Background()
	c := clClient(b, redisURL())
	rc := clRueidis(b, c)
	now := time.Now().UTC().Truncate(time.Microsecond)
	e := benchEntry{
		Key: "+5561988880000", KeyType: "PHONE", Participant: "12345678", Branch: "0001", AccountNumber: "0007654321",
		AccountType: "CACC", AccountOpenedAt: now.AddDate(-3, 0, 0), OwnerType: "LEGAL_PERSON", OwnerTaxID: "11222333000181",
		OwnerName: "Empresa de Pagamentos Exemplo Ltda", OwnerTradeName: "Exemplo Pay", Status: "ACTIVE",
		CreatedAt: now.AddDate(-1, 0, 0), UpdatedAt: now, CID: "5d41402abc4b2a76b9719d911017c592aa2c1b7e0f2d7f6e3c8a1b9d0e4f6a7b",
	}
	prefix := clPrefix(b)
	load := func(context.Context, string) (benchEntry, int64, error) { return e, e.UpdatedAt.UnixNano(), nil }
	rt := cachelayer.NewReadThrough(c, prefix, load, cachelayer.WithCacheTTL(time.Minute))
	shared := cachelayer.NewReadThrough(c, prefix, load, cachelayer.WithCacheTTL(time.Minute), cachelayer.WithSharedValues())
	if err := cachelayer.NewWriteThrough[benchEntry](c, prefix).Put(ctx, e.Key, e, e.UpdatedAt.UnixNano()); err != nil {
		b.Fatal(err)
	}
	key := prefix + e.Key
	b.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(key).Build()) })

	ropt, err := redis.ParseURL(redisURL())
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(ropt)
	b.Cleanup(func() { rdb.Close() })

	db, err := testdb.Create(ctx, "cachelayer_bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO entries (key, key_type, participant, branch, account_number, account_type,
		account_opened_at, owner_type, owner_tax_id, owner_name, owner_trade_name, status, created_at, key_owned_since,
		updated_at, request_id, cid, cid_w0, cid_w1, cid_w2, cid_w3)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, gen_random_uuid(), $15, 1, 2, 3, 4)`,
		e.Key, e.KeyType, e.Participant, e.Branch, e.AccountNumber, e.AccountType, e.AccountOpenedAt, e.OwnerType,
		e.OwnerTaxID, e.OwnerName, e.OwnerTradeName, e.Status, e.CreatedAt, e.UpdatedAt, e.CID); err != nil {
		b.Fatal(err)
	}

	// Warm the client-side cache until a read is a local hit.
	for deadline := time.Now().Add(2 * time.Second); ; {
		res := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), time.Minute)
		if res.IsCacheHit() {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no client-side cache hit within 2 s")
		}
	}

	b.Run("client-side cache hit", func(b *testing.B) {
		for b.Loop() {
			res := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), time.Minute)
			if _, err := res.AsBytes(); err != nil || !res.IsCacheHit() {
				b.Fatalf("not a client-side hit: %v", err)
			}
		}
	})
	b.Run("ReadThrough.Get, client-side hit, decoded", func(b *testing.B) {
		for b.Loop() {
			if got, err := rt.Get(ctx, e.Key); err != nil || got.Key != e.Key {
				b.Fatalf("Get = (%+v, %v)", got, err)
			}
		}
	})
	b.Run("ReadThrough.Get, client-side hit, shared values", func(b *testing.B) {
		for b.Loop() {
			if got, err := shared.Get(ctx, e.Key); err != nil || got.Key != e.Key {
				b.Fatalf("Get = (%+v, %v)", got, err)
			}
		}
	})
	b.Run("rueidis GET, no client-side cache", func(b *testing.B) {
		for b.Loop() {
			if _, err := rc.Do(ctx, rc.B().Get().Key(key).Build()).AsBytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-redis GET", func(b *testing.B) {
		for b.Loop() {
			if _, err := rdb.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PostgreSQL SELECT by key", func(b *testing.B) {
		for b.Loop() {
			var got benchEntry
			if err := db.Pool.QueryRow(ctx, benchSelect, e.Key).Scan(&got.Key, &got.KeyType, &got.Participant,
				&got.Branch, &got.AccountNumber, &got.AccountType, &got.AccountOpenedAt, &got.OwnerType, &got.OwnerTaxID,
				&got.OwnerName, &got.OwnerTradeName, &got.Status, &got.CreatedAt, &got.UpdatedAt, &got.CID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("JSON decode alone", func(b *testing.B) {
		raw, _ := json.Marshal(e)
		for b.Loop() {
			var got benchEntry
			if err := json.Unmarshal(raw, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStaleWindow runs b.N rounds of wtStaleWindows (write through one client, read back through it,
// another client spinning on its client-side cache until it sees the new value) and reports the other
// client's stale window: p50, p99 and max in µs. Goal: p99 under 5 ms.
func BenchmarkStaleWindow(b *testing.B) {
	a := clClient(b, redisURL())
	other := clClient(b, redisURL())
	windows := wtStaleWindows(b, a, other, b.N)
	p50, p99, maximum := wtPercentiles(windows)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(maximum.Microseconds()), "max-µs")
}
