package cachelayer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// The limiter tests talk to the real Redis that `scripts/deps.sh up` starts (REDIS_URL, default
// redis://127.0.0.1:6379/0); the Redis-down tests run their own on 6392 (localbucket_test.go).

func limitRedisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// limitRedis returns a rueidis client of url (default REDIS_URL), or fails the test saying how to start
// Redis.
func limitRedis(t testing.TB, url string) rueidis.Client {
	t.Helper()
	if url == "" {
		url = limitRedisURL()
	}
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		t.Fatalf("REDIS_URL=%q: %v", url, err)
	}
	opt.Dialer.Timeout = 3 * time.Second
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("Redis is not reachable at %s (%v): start the local services with `scripts/deps.sh up`", url, err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(func() { limitSweep(t, c) })
	return c
}

// limitSweep deletes the keys this test (and its subtests) made with limitTestKey, so that buckets drained
// on a test clock do not linger in the shared Redis for the hours they would take to refill.
func limitSweep(t testing.TB, c rueidis.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	match := "*limit-test:" + limitGlobEscape(t.Name()) + "*"
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(match).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return // Redis may be down (the outage tests): nothing to sweep then
		}
		for _, k := range e.Elements {
			c.Do(ctx, c.B().Del().Key(k).Build())
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

func limitGlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// limitTestKey is unique per test run, so parallel tests and repeated runs never share a bucket.
func limitTestKey(t testing.TB, name string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return "limit-test:" + t.Name() + ":" + hex.EncodeToString(b) + ":" + name
}

// limitClock is a test clock that moves only when told to.
type limitClock struct{ ms atomic.Int64 }

// limitEpoch is the test clock's zero: a whole second, so that GCRA's float seconds stay exact.
const limitEpoch = 1_700_000_000_000

func newLimitClock() *limitClock {
	c := &limitClock{}
	c.ms.Store(limitEpoch)
	return c
}

func (c *limitClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *limitClock) set(since time.Duration) { c.ms.Store(limitEpoch + since.Milliseconds()) }

// tbBuckets is what the Redis bucket and its in-process twin have in common.
type tbBuckets interface {
	Check(ctx context.Context, key string, p cachelayer.BucketParams, min float64) (cachelayer.Decision, error)
	Take(ctx context.Context, key string, p cachelayer.BucketParams, cost float64) (cachelayer.Decision, error)
	Charge(ctx context.Context, key string, p cachelayer.BucketParams, cost float64) (cachelayer.Decision, error)
	Credit(ctx context.Context, key string, p cachelayer.BucketParams, amount float64) (cachelayer.Decision, error)
}

func tbDo(ctx context.Context, b tbBuckets, op, key string, p cachelayer.BucketParams, amount float64) (cachelayer.Decision, error) {
	switch op {
	case "check":
		return b.Check(ctx, key, p, amount)
	case "take":
		return b.Take(ctx, key, p, amount)
	case "charge":
		return b.Charge(ctx, key, p, amount)
	case "credit":
		return b.Credit(ctx, key, p, amount)
	}
	panic("unknown op " + op)
}

var (
	tbNatural = cachelayer.BucketParams{Capacity: 100, RefillTokens: 2, RefillPeriod: time.Minute}
	tbLegal   = cachelayer.BucketParams{Capacity: 1000, RefillTokens: 20, RefillPeriod: time.Minute}
	tbCatA    = cachelayer.BucketParams{Capacity: 50000, RefillTokens: 25000, RefillPeriod: time.Minute}
	tbCatH    = cachelayer.BucketParams{Capacity: 50, RefillTokens: 2, RefillPeriod: time.Minute}
)

type tbStep struct {
	at     time.Duration // on the test clock
	op     string        // check, take, charge, credit
	amount float64
	want   cachelayer.Decision
}

func tbDecision(allowed bool, balance float64, retry time.Duration) cachelayer.Decision {
	return cachelayer.Decision{Allowed: allowed, Balance: balance, RetryAfter: retry}
}

// tbArithmetic is the DICT's bucket arithmetic (DOMAIN.md), run against Redis and the in-process twin.
var tbArithmetic = []struct {
	name  string
	p     cachelayer.BucketParams
	steps []tbStep
}{
	{"natural person: a new bucket is full; found and not-found costs; payment credits capped at capacity", tbNatural, []tbStep{
		{0, "check", 1, tbDecision(true, 100, 0)},
		{0, "charge", 1, tbDecision(true, 99, 0)},
		{0, "charge", 20, tbDecision(true, 79, 0)},
		{0, "credit", 1, tbDecision(true, 80, 0)},
		{0, "credit", 50, tbDecision(true, 100, 0)},
		{0, "take", 100, tbDecision(true, 0, 0)},
	}},
	{"natural person: a not-found on a nearly empty bucket leaves it negative", tbNatural, []tbStep{
		{0, "take", 99.5, tbDecision(true, 0.5, 0)},
		{0, "check", 1, tbDecision(false, 0.5, 15*time.Second)},
		{0, "charge", 20, tbDecision(false, -19.5, 615*time.Second)}, // 20.5 tokens at one per 30 s
		{10 * time.Minute, "check", 1, tbDecision(false, 0.5, 15*time.Second)},
		{10*time.Minute + 15*time.Second, "check", 1, tbDecision(true, 1, 0)},
		{10*time.Minute + 15*time.Second, "charge", 1, tbDecision(false, 0, 30*time.Second)},
	}},
	{"natural person: refill is proportional to elapsed time", tbNatural, []tbStep{
		{0, "take", 100, tbDecision(true, 0, 0)},
		{15 * time.Second, "check", 1, tbDecision(false, 0.5, 15*time.Second)},
		{45 * time.Second, "take", 1, tbDecision(true, 0.5, 0)},
		{45 * time.Second, "take", 1, tbDecision(false, 0.5, 15*time.Second)},
		{2 * time.Minute, "check", 1, tbDecision(true, 3, 0)},
	}},
	{"the capacity caps the refill", tbNatural, []tbStep{
		{0, "charge", 10, tbDecision(true, 90, 0)},
		{time.Hour, "check", 1, tbDecision(true, 100, 0)},
		{time.Hour, "take", 100, tbDecision(true, 0, 0)},
		{time.Hour, "take", 1, tbDecision(false, 0, 30*time.Second)},
	}},
	{"legal person: 1,000 at 20 per minute, payment credit 2", tbLegal, []tbStep{
		{0, "take", 1000, tbDecision(true, 0, 0)},
		{0, "check", 1, tbDecision(false, 0, 3*time.Second)},
		{3 * time.Second, "check", 1, tbDecision(true, 1, 0)},
		{3 * time.Second, "charge", 20, tbDecision(false, -19, time.Minute)},
		{time.Minute + 3*time.Second, "check", 1, tbDecision(true, 1, 0)},
		{time.Minute + 3*time.Second, "credit", 2, tbDecision(true, 3, 0)},
	}},
	{"take refuses below its cost and deducts nothing; check takes a minimum", tbNatural, []tbStep{
		{0, "take", 95, tbDecision(true, 5, 0)},
		{0, "take", 20, tbDecision(false, 5, 450*time.Second)},
		{0, "check", 5, tbDecision(true, 5, 0)},
		{0, "check", 6, tbDecision(false, 5, 30*time.Second)},
	}},
	{"participant H: 50 at 2 per minute, not found costs 3", tbCatH, []tbStep{
		{0, "take", 48, tbDecision(true, 2, 0)},
		{0, "charge", 3, tbDecision(false, -1, time.Minute)},
		{30 * time.Second, "check", 1, tbDecision(false, 0, 30*time.Second)},
		{time.Minute, "check", 1, tbDecision(true, 1, 0)},
	}},
	{"participant A: fractions of a token refill every millisecond", tbCatA, []tbStep{
		{0, "take", 50000, tbDecision(true, 0, 0)},
		{time.Millisecond, "check", 1, tbDecision(false, 25000.0/60000, 2*time.Millisecond)},
		{3 * time.Millisecond, "check", 1, tbDecision(true, 1.25, 0)},
	}},
	{"a clock that steps back neither refills nor rewinds the bucket", tbNatural, []tbStep{
		{time.Minute, "take", 100, tbDecision(true, 0, 0)},
		{0, "check", 1, tbDecision(false, 0, 30*time.Second)},
		{time.Minute + 30*time.Second, "check", 1, tbDecision(true, 1, 0)},
	}},
}

func tbRunArithmetic(t *testing.T, newBuckets func(t *testing.T, clock *limitClock) tbBuckets) {
	for _, test := range tbArithmetic {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			clock := newLimitClock()
			b := newBuckets(t, clock)
			key := limitTestKey(t, "bucket")
			for i, s := range test.steps {
				clock.set(s.at)
				got, err := tbDo(ctx, b, s.op, key, test.p, s.amount)
				if err != nil {
					t.Fatalf("step %d (%s %v at %v): %v", i, s.op, s.amount, s.at, err)
				}
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Errorf("step %d (%s %v at %v) mismatch (-want +got):\n%s", i, s.op, s.amount, s.at, diff)
				}
			}
		})
	}
}

func TestTokenBucketArithmetic(t *testing.T) {
	t.Parallel()
	r := limitRedis(t, "")
	tbRunArithmetic(t, func(t *testing.T, clock *limitClock) tbBuckets {
		b, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r), cachelayer.WithLimitClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestLocalTokenBucketArithmetic(t *testing.T) {
	t.Parallel()
	tbRunArithmetic(t, func(t *testing.T, clock *limitClock) tbBuckets {
		b, err := cachelayer.NewLocalTokenBucket(cachelayer.WithLimitClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// 500 goroutines race for a bucket of 100 tokens, through two clients (two instances): exactly 100 win.
func TestTokenBucketRaceAllowsExactlyCapacity(t *testing.T) {
	t.Parallel()
	const capacity, racers = 100, 500
	ctx := context.Background()
	clock := newLimitClock() // fixed: nothing refills during the race
	var buckets []*cachelayer.TokenBucket
	for range 2 {
		b, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(limitRedis(t, "")), cachelayer.WithLimitClock(clock.Now), cachelayer.WithLimitTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		buckets = append(buckets, b)
	}
	p := cachelayer.BucketParams{Capacity: capacity, RefillTokens: 1, RefillPeriod: time.Hour}
	key := limitTestKey(t, "race")
	var allowed, negative atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, racers)
	for i := range racers {
		wg.Go(func() {
			<-start
			d, err := buckets[i%2].Take(ctx, key, p, 1)
			if err != nil {
				errs <- err
				return
			}
			if d.Allowed {
				allowed.Add(1)
			}
			if d.Balance < 0 {
				negative.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Take: %v", err)
	}
	if got := allowed.Load(); got != capacity {
		t.Errorf("%d racers on a bucket of %d: %d allowed, want exactly %d", racers, capacity, got, capacity)
	}
	if got := negative.Load(); got != 0 {
		t.Errorf("%d Takes saw a negative balance; Take must never overdraw", got)
	}
	d, err := buckets[0].Check(ctx, key, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tbDecision(false, 0, time.Hour), d); diff != "" {
		t.Errorf("bucket after the race mismatch (-want +got):\n%s", diff)
	}
}

// The bucket's key: one hash tag per bucket (kept when the caller brought one), expiring when the bucket
// would be full again, deleted when it is full.
func TestTokenBucketKeysAndExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := limitRedis(t, "")
	clock := newLimitClock()
	b, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r), cachelayer.WithLimitClock(clock.Now), cachelayer.WithLimitKeyPrefix("tbtest:"))
	if err != nil {
		t.Fatal(err)
	}
	id := limitTestKey(t, "payer")
	for _, test := range []struct {
		key, redisKey string
	}{
		{id, "tbtest:{" + id + "}"},
		{"dict:bucket:payer:{" + id + "}", "tbtest:dict:bucket:payer:{" + id + "}"},
	} {
		exists := func() int64 {
			t.Helper()
			n, err := r.Do(ctx, r.B().Exists().Key(test.redisKey).Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if _, err := b.Check(ctx, test.key, tbNatural, 1); err != nil {
			t.Fatal(err)
		}
		if got := exists(); got != 0 {
			t.Errorf("%s exists after a Check of a full bucket; a Check must write nothing", test.redisKey)
		}
		if _, err := b.Charge(ctx, test.key, tbNatural, 1); err != nil {
			t.Fatal(err)
		}
		pttl, err := r.Do(ctx, r.B().Pttl().Key(test.redisKey).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		// one token short of 100 at 2 per minute: full again in 30 s
		if pttl <= 25_000 || pttl > 30_000 {
			t.Errorf("PTTL %s = %d ms after a charge of 1, want just under 30000 (the time to refill)", test.redisKey, pttl)
		}
		if _, err := b.Credit(ctx, test.key, tbNatural, 1); err != nil {
			t.Fatal(err)
		}
		if got := exists(); got != 0 {
			t.Errorf("%s still exists after its bucket was credited back to full", test.redisKey)
		}
	}
}

// Without a test clock the script reads the server's clock: a refused Take is allowed once its
// retry-after has passed.
func TestTokenBucketServerClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(limitRedis(t, "")))
	if err != nil {
		t.Fatal(err)
	}
	p := cachelayer.BucketParams{Capacity: 2, RefillTokens: 2, RefillPeriod: 2 * time.Second} // a token a second
	key := limitTestKey(t, "server-clock")
	for i, want := range []bool{true, true, false} {
		d, err := b.Take(ctx, key, p, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != want {
			t.Fatalf("Take %d: allowed = %v, want %v (%+v)", i, d.Allowed, want, d)
		}
		if !want {
			if d.RetryAfter <= 0 || d.RetryAfter > time.Second {
				t.Fatalf("Take %d refused with RetryAfter %v, want in (0, 1s]", i, d.RetryAfter)
			}
			time.Sleep(d.RetryAfter + 5*time.Millisecond)
		}
	}
	d, err := b.Take(ctx, key, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allowed {
		t.Errorf("Take after waiting the retry-after was refused: %+v", d)
	}
}

func TestTokenBucketInvalidArguments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := limitRedis(t, "")
	remote, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r))
	if err != nil {
		t.Fatal(err)
	}
	local, err := cachelayer.NewLocalTokenBucket()
	if err != nil {
		t.Fatal(err)
	}
	key := limitTestKey(t, "invalid")
	for _, test := range []struct {
		name   string
		op     string
		p      cachelayer.BucketParams
		amount float64
	}{
		{"zero capacity", "check", cachelayer.BucketParams{RefillTokens: 1, RefillPeriod: time.Second}, 1},
		{"no refill", "charge", cachelayer.BucketParams{Capacity: 1, RefillPeriod: time.Second}, 1},
		{"sub-millisecond period", "credit", cachelayer.BucketParams{Capacity: 1, RefillTokens: 1, RefillPeriod: time.Microsecond}, 1},
		{"negative cost", "charge", tbNatural, -1},
		{"take more than the capacity", "take", tbNatural, 101},
		{"check more than the capacity", "check", tbNatural, 101},
	} {
		for _, b := range []tbBuckets{remote, local} {
			if _, err := tbDo(ctx, b, test.op, key, test.p, test.amount); !errors.Is(err, cachelayer.ErrLimitParams) {
				t.Errorf("%s (%T): err = %v, want ErrLimitParams", test.name, b, err)
			}
		}
	}
}

// An error that is not an outage (here a key of the wrong type, or the caller's own context ending) is
// returned, not answered by the fallback.
func TestTokenBucketReturnsErrorsThatAreNotOutages(t *testing.T) {
	t.Parallel()
	r := limitRedis(t, "")
	reg := prometheus.NewRegistry()
	b, err := cachelayer.NewTokenBucket(cachelayer.FixedRedis(r), cachelayer.WithLimitKeyPrefix(""), cachelayer.WithLimitRegisterer(reg), cachelayer.WithLimitName("tb"))
	if err != nil {
		t.Fatal(err)
	}
	key := "{" + limitTestKey(t, "wrongtype") + "}"
	ctx := context.Background()
	if err := r.Do(ctx, r.B().Set().Key(key).Value("not a hash").Ex(time.Minute).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Take(ctx, key, tbNatural, 1); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("Take on a string key: err = %v, want WRONGTYPE", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Take(cancelled, limitTestKey(t, "cancelled"), tbNatural, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Take with a cancelled context: err = %v, want context.Canceled", err)
	}
	if got := limitMetric(t, reg, "rate_limit_fallbacks_total", map[string]string{"limiter": "tb"}); got != 0 {
		t.Errorf("rate_limit_fallbacks_total = %v, want 0: these errors are not outages", got)
	}
}
