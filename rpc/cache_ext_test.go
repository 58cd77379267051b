package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// newE2E returns a fresh end-to-end id of participant A.
func newE2E() string {
	return fmt.Sprintf("E%s202611271530%011d", partA, seq.Add(1))
}

func retryDelay(err error) time.Duration {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return -1
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok {
				return ri.GetRetryDelay().AsDuration()
			}
		}
	}
	return -1
}

// TestLookupAntiScan spends a natural-person payer's bucket (100 tokens,
// found −1) and checks the refusal, its RetryInfo and the payment credit.
func TestLookupAntiScan(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
	payer := newCPF()
	lookup := func(e2e string) error {
		_, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: payer, EndToEndId: e2e})
		return err
	}
	var last string
	for i := 0; i < 100; i++ {
		last = newE2E()
		if err := lookup(last); err != nil {
			t.Fatalf("lookup %d of 100: %v", i+1, err)
		}
	}
	err := lookup(newE2E())
	wantErr(t, err, connect.CodeResourceExhausted, dict.ReasonRateLimited)
	// One token refills in 30 s at 2 per minute.
	if d := retryDelay(err); d <= 0 || d > 30*time.Second {
		t.Errorf("RetryInfo delay = %v, want within (0, 30s]", d)
	}
	// Another payer is not affected.
	if _, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: newCPF(), EndToEndId: newE2E()}); err != nil {
		t.Errorf("another payer refused: %v", err)
	}
	// A payment after the last lookup credits one token, once.
	credit := func(payerID, e2e string) bool {
		t.Helper()
		res, err := c.CreditPayment(context.Background(), &dictv1.CreditPaymentRequest{PayerId: payerID, EndToEndId: e2e})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetCredited()
	}
	if credit(newCPF(), last) {
		t.Error("a payment credited another payer's lookup")
	}
	if credit(payer, newE2E()) {
		t.Error("a payment credited a lookup that never happened")
	}
	if !credit(payer, last) {
		t.Fatal("payment after a lookup not credited")
	}
	if credit(payer, last) {
		t.Error("one lookup credited twice")
	}
	if err := lookup(newE2E()); err != nil {
		t.Errorf("lookup after the credit: %v", err)
	}
	wantErr(t, lookup(newE2E()), connect.CodeResourceExhausted, dict.ReasonRateLimited)
}

// TestCachedReadsFollowWrites reads through two instances that share the
// database and Redis, each with its own client-side cache: the writer
// never reads its old value, and the other sees the new one once Redis's
// invalidation reaches it.
func TestCachedReadsFollowWrites(t *testing.T) {
	t.Parallel()
	other, err := newStack(env.db, redisTestURL())
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	c1 := client(t, partA)
	c2 := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), other.server.URL, connect.WithProtoJSON())
	e := mustCreate(t, c1, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), legalOwner(newCNPJ(false))))
	getEntry := func(c dictv1connect.CoreDictServiceClient) *dictv1.Entry {
		t.Helper()
		res, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetEntry()
	}
	// The name, once the directory confirmed the last write ("" while pending).
	get := func(c dictv1connect.CoreDictServiceClient) string {
		t.Helper()
		if e := getEntry(c); e.GetStatus() == dictv1.EntryStatus_ENTRY_STATUS_ACTIVE {
			return e.GetOwner().GetName()
		}
		return ""
	}
	for round := 0; round < 30; round++ {
		get(c1)
		get(c2) // both instances hold the entry in their client-side caches
		name := fmt.Sprintf("Empresa Rodada %d", round)
		if _, err := c1.UpdateKey(context.Background(), &dictv1.UpdateKeyRequest{RequestId: uuid.NewString(), Key: e.GetKey(),
			Account: e.GetAccount(), Owner: &dictv1.Owner{Name: name}, Reason: dictv1.Reason_REASON_USER_REQUESTED}); err != nil {
			t.Fatal(err)
		}
		// The writer reads its own write at once: pending.
		if got := getEntry(c1); got.GetStatus() != dictv1.EntryStatus_ENTRY_STATUS_PENDING && got.GetOwner().GetName() != name {
			t.Fatalf("round %d: the writer read %s %q after writing %q", round, got.GetStatus(), got.GetOwner().GetName(), name)
		}
		// Whichever instance applies the directory's response, both serve
		// the confirmed name soon after, never the old one once they did.
		for _, c := range []dictv1connect.CoreDictServiceClient{c1, c2} {
			deadline := time.Now().Add(10 * time.Second)
			for get(c) != name {
				if time.Now().After(deadline) {
					t.Fatalf("round %d: an instance does not serve the confirmed name 10 s after the write", round)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	// A delete is seen too, on both instances: not found, not a cached ghost.
	mustDelete(t, c1, e.GetKey(), dictv1.Reason_REASON_USER_REQUESTED)
	awaitGone(t, c2, e.GetKey())
	_, err = c1.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()})
	wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
}

// TestLookupCountsWriteBehind counts lookups in Redis and flushes them to
// PostgreSQL.
func TestLookupCountsWriteBehind(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), legalOwner(newCNPJ(false))))
	payer := newCNPJ(false)
	for i := 0; i < 7; i++ {
		if _, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: payer, EndToEndId: newE2E()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.stack.counter.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := env.stack.svc.LookupCount(context.Background(), e.GetKey()); err != nil || n != 7 {
		t.Errorf("lookup count = %d (%v), want 7", n, err)
	}
}

// redisDownPort is the separate Redis the outage test stops and starts
// through scripts/deps.sh, so the shared one keeps serving the other tests.
const redisDownPort = "6393"

func deps(t *testing.T, action string) {
	t.Helper()
	cmd := exec.Command("../scripts/deps.sh", action, "redis")
	cmd.Env = append(cmd.Environ(), "DEPS_REDIS_PORT="+redisDownPort)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/deps.sh %s redis on %s: %v\n%s", action, redisDownPort, err, out)
	}
}

// TestRedisDownFallsBack stops Redis under a running instance: reads come
// from PostgreSQL and lookups are limited in process, with no error to the
// caller; when Redis is back, the instance uses it again by itself.
func TestRedisDownFallsBack(t *testing.T) {
	deps(t, "up")
	t.Cleanup(func() { deps(t, "down") })
	st, err := newStack(env.db, "redis://127.0.0.1:"+redisDownPort+"/0")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	c := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL, connect.WithProtoJSON())
	e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
	exercise := func(phase string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			if _, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: e.GetKey()}); err != nil {
				t.Fatalf("%s: GetKey: %v", phase, err)
			}
			if _, err := c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: e.GetKey(), PayerId: newCPF(), EndToEndId: newE2E()}); err != nil {
				t.Fatalf("%s: LookupKey: %v", phase, err)
			}
		}
	}
	exercise("Redis up")
	deps(t, "down")
	exercise("Redis down")
	if f := metricSum(t, st, "redis_fallbacks_total"); f == 0 {
		t.Error("redis_fallbacks_total did not count the reads that fell back")
	}
	if f := metricSum(t, st, "rate_limit_fallbacks_total"); f == 0 {
		t.Error("rate_limit_fallbacks_total did not count the limiter's fallbacks")
	}
	deps(t, "up")
	deadline := time.Now().Add(10 * time.Second)
	for !st.redis.Available() {
		if time.Now().After(deadline) {
			t.Fatal("the instance did not reconnect to Redis within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := metricSum(t, st, "redis_hits_total")
	exercise("Redis back")
	exercise("Redis back, cached")
	if after := metricSum(t, st, "redis_hits_total"); after <= before {
		t.Errorf("no cache hits after Redis came back (hits %v -> %v)", before, after)
	}
}

// metricSum adds up every series of a counter in the stack's registry.
func metricSum(t *testing.T, st *stack, name string) float64 {
	t.Helper()
	mfs, err := st.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	return sum
}

// fakeDirectory stands in for the central DICT's reads in process, so that
// the cache-aside test counts every call: it holds other participants'
// entries and counts its calls.
type fakeDirectory struct {
	mu      sync.Mutex
	entries map[string]dict.Entry
	calls   map[string]int
	delay   time.Duration
}

func (d *fakeDirectory) Lookup(ctx context.Context, _, key, _, _ string) (dict.Entry, bool, error) {
	time.Sleep(d.delay)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[key]++
	e, ok := d.entries[key]
	return e, ok, nil
}

func (d *fakeDirectory) CheckKeys(_ context.Context, _ string, keys []string) (map[string]bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]bool{}
	for _, k := range keys {
		_, out[k] = d.entries[k]
	}
	return out, nil
}

func (d *fakeDirectory) callsOf(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[key]
}

// TestDirectoryLookupsCacheAside looks up keys held elsewhere: a legal
// person's key is asked of the directory once, even by 40 concurrent
// lookups on two instances, and then served from the cache; a natural
// person's key is asked every time; a key not found costs the payer 20.
func TestDirectoryLookupsCacheAside(t *testing.T) {
	t.Parallel()
	legalKey, naturalKey, missing := newEmail(), newEmail(), newEmail()
	owned := func(key string, owner dict.Owner) dict.Entry {
		return dict.Entry{KeyType: dict.KeyTypeEmail, Key: key, Owner: owner, Status: dict.EntryStatusActive,
			Account: dict.Account{Participant: partC, Number: "123", Type: dict.AccountTypeCACC, OpenedAt: time.Unix(1e9, 0).UTC()}}
	}
	cnpj := newCNPJ(false)
	dir := &fakeDirectory{calls: map[string]int{}, delay: 20 * time.Millisecond, entries: map[string]dict.Entry{
		legalKey:   owned(legalKey, dict.Owner{Type: dict.OwnerTypeLegalPerson, TaxID: cnpj, Name: "Loja Exemplo SA", TradeName: "Loja"}),
		naturalKey: owned(naturalKey, dict.Owner{Type: dict.OwnerTypeNaturalPerson, TaxID: newCPF(), Name: "João Souza"}),
	}}
	s1, err := newStackWith(env.db, redisTestURL(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.close()
	s2, err := newStackWith(env.db, redisTestURL(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close()
	clients := []dictv1connect.CoreDictServiceClient{
		dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), s1.server.URL, connect.WithProtoJSON()),
		dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), s2.server.URL, connect.WithProtoJSON()),
	}
	lookup := func(c dictv1connect.CoreDictServiceClient, key, payer string) (*dictv1.LookupKeyResponse, error) {
		return c.LookupKey(context.Background(), &dictv1.LookupKeyRequest{Key: key, PayerId: payer, EndToEndId: newE2E()})
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := lookup(clients[i%2], legalKey, newCNPJ(false))
			if err != nil {
				t.Errorf("lookup %d: %v", i, err)
				return
			}
			if got := res.GetPayerView().GetTaxIdMasked(); got != cnpj {
				t.Errorf("payer view tax id = %q, want the CNPJ in full", got)
			}
		}()
	}
	wg.Wait()
	if n := dir.callsOf(legalKey); n != 1 {
		t.Errorf("directory asked %d times for a legal person's key, want 1", n)
	}
	for i := 0; i < 3; i++ {
		if _, err := lookup(clients[i%2], naturalKey, newCPF()); err != nil {
			t.Fatal(err)
		}
	}
	if n := dir.callsOf(naturalKey); n != 3 {
		t.Errorf("directory asked %d times for a natural person's key in 3 lookups, want 3 (never cached)", n)
	}
	// Not found costs 20: a natural-person payer (100 tokens) gets 5.
	payer := newCPF()
	for i := 0; i < 5; i++ {
		_, err := lookup(clients[0], missing, payer)
		wantErr(t, err, connect.CodeNotFound, dict.ReasonEntryNotFound)
	}
	_, err = lookup(clients[0], missing, payer)
	wantErr(t, err, connect.CodeResourceExhausted, dict.ReasonRateLimited)
}

// TestRequestRateLimits puts the per-IP and per-account GCRA limiters in
// front of the service: an account over its rate is refused with
// RESOURCE_EXHAUSTED and RetryInfo, while another account goes on.
func TestRequestRateLimits(t *testing.T) {
	t.Parallel()
	rc := cachelayer.DefaultConfig()
	rc.URL = redisTestURL()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	redis, err := cachelayer.NewClient(ctx, rc)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer redis.Close()
	prefix := cachelayer.WithLimitKeyPrefix("limit:test:" + uuid.NewString() + ":")
	ip, err := cachelayer.NewIPRateLimiter(cachelayer.NewRueidisScripter(redis), cachelayer.RatePerSecond(1000), prefix)
	if err != nil {
		t.Fatal(err)
	}
	// 5 requests per minute: no refill can sneak in during the test.
	account, err := cachelayer.NewAccountRateLimiter(cachelayer.NewRueidisScripter(redis),
		cachelayer.RateLimit{Rate: 5, Burst: 5, Period: time.Minute}, prefix)
	if err != nil {
		t.Fatal(err)
	}
	st, err := newStackOpts(env.db, redisTestURL(), stackOptions{ipLimiter: ip, accountLimiter: account})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	a := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL, connect.WithProtoJSON())
	b := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partB), st.server.URL, connect.WithProtoJSON())
	call := func(c dictv1connect.CoreDictServiceClient) error {
		_, err := c.GetSyncStatus(context.Background(), &dictv1.GetSyncStatusRequest{})
		return err
	}
	for i := 0; i < 5; i++ {
		if err := call(a); err != nil {
			t.Fatalf("request %d of 5: %v", i+1, err)
		}
	}
	err = call(a)
	wantErr(t, err, connect.CodeResourceExhausted, dict.ReasonRateLimited)
	if d := retryDelay(err); d <= 0 || d > 12*time.Second {
		t.Errorf("RetryInfo delay = %v, want within (0, 12s] at 5 per minute", d)
	}
	if err := call(b); err != nil {
		t.Errorf("another account refused: %v", err)
	}
}
