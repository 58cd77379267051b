package cachelayer_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// swWindows is what the Redis sliding window and its in-process twin have in common.
type swWindows interface {
	Decide(ctx context.Context, key string) (cachelayer.Decision, error)
	Peek(ctx context.Context, key string) (cachelayer.Decision, error)
	Count(ctx context.Context, key string) (int64, error)
}

type swStep struct {
	at        time.Duration
	op        string // allow, peek, count
	want      cachelayer.Decision
	wantCount int64
}

// 3 requests per minute.
var swSteps = []swStep{
	{at: 0, op: "allow", want: tbDecision(true, 2, 0)},
	{at: 0, op: "allow", want: tbDecision(true, 1, 0)}, // same millisecond: a member of its own
	{at: 0, op: "count", wantCount: 2},
	{at: 20 * time.Second, op: "allow", want: tbDecision(true, 0, 0)},
	{at: 30 * time.Second, op: "allow", want: tbDecision(false, 0, 30*time.Second)}, // until the first leaves
	{at: 30 * time.Second, op: "peek", want: tbDecision(false, 0, 30*time.Second)},
	{at: 30 * time.Second, op: "count", wantCount: 3},            // the refusal is not recorded
	{at: time.Minute, op: "allow", want: tbDecision(true, 1, 0)}, // the two at 0 are out: at or before now - window
	{at: time.Minute, op: "count", wantCount: 2},
	{at: time.Minute + time.Second, op: "peek", want: tbDecision(true, 1, 0)},
	{at: time.Minute + 20*time.Second, op: "count", wantCount: 1},
	{at: 3 * time.Minute, op: "count", wantCount: 0},
	{at: 3 * time.Minute, op: "allow", want: tbDecision(true, 2, 0)},
}

func swRun(t *testing.T, w swWindows, clock *limitClock, key string, afterStep func(i int)) {
	t.Helper()
	ctx := context.Background()
	for i, s := range swSteps {
		clock.set(s.at)
		switch s.op {
		case "allow", "peek":
			do := w.Decide
			if s.op == "peek" {
				do = w.Peek
			}
			got, err := do(ctx, key)
			if err != nil {
				t.Fatalf("step %d (%s at %v): %v", i, s.op, s.at, err)
			}
			if diff := cmp.Diff(s.want, got); diff != "" {
				t.Errorf("step %d (%s at %v) mismatch (-want +got):\n%s", i, s.op, s.at, diff)
			}
		case "count":
			got, err := w.Count(ctx, key)
			if err != nil {
				t.Fatalf("step %d (count at %v): %v", i, s.at, err)
			}
			if got != s.wantCount {
				t.Errorf("step %d: Count at %v = %d, want %d", i, s.at, got, s.wantCount)
			}
		}
		if afterStep != nil {
			afterStep(i)
		}
	}
}

func TestSlidingWindow(t *testing.T) {
	t.Parallel()
	r := limitRedis(t, "")
	clock := newLimitClock()
	w, err := cachelayer.NewSlidingWindow(cachelayer.FixedRedis(r), 3, time.Minute, cachelayer.WithLimitClock(clock.Now), cachelayer.WithLimitKeyPrefix("swtest:"))
	if err != nil {
		t.Fatal(err)
	}
	key := limitTestKey(t, "client")
	// The set itself: Allow trims what left the window (Count and Peek only look).
	wantMembers := map[int]int64{1: 2, 3: 3, 4: 3, 7: 2, 12: 1}
	swRun(t, w, clock, key, func(i int) {
		want, ok := wantMembers[i]
		if !ok {
			return
		}
		ctx := context.Background()
		got, err := r.Do(ctx, r.B().Zcard().Key("swtest:{"+key+"}").Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("after step %d: ZCARD = %d, want %d", i, got, want)
		}
		if i == 12 {
			pttl, err := r.Do(ctx, r.B().Pttl().Key("swtest:{"+key+"}").Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			if pttl <= 50_000 || pttl > 60_000 {
				t.Errorf("PTTL after an Allow = %d ms, want just under the window (60000)", pttl)
			}
		}
	})
}

func TestLocalSlidingWindow(t *testing.T) {
	t.Parallel()
	clock := newLimitClock()
	w, err := cachelayer.NewLocalSlidingWindow(3, time.Minute, cachelayer.WithLimitClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	swRun(t, w, clock, limitTestKey(t, "client"), nil)
}

// On the server's clock: the limit holds, per key.
func TestSlidingWindowServerClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w, err := cachelayer.NewSlidingWindow(cachelayer.FixedRedis(limitRedis(t, "")), 2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, b := limitTestKey(t, "a"), limitTestKey(t, "b")
	var got []bool
	for _, key := range []string{a, a, a, b} {
		ok, err := w.Allow(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ok)
	}
	if diff := cmp.Diff([]bool{true, true, false, true}, got); diff != "" {
		t.Errorf("Allow a, a, a, b mismatch (-want +got):\n%s", diff)
	}
	if n, err := w.Count(ctx, a); err != nil || n != 2 {
		t.Errorf("Count(a) = %d, %v; want 2", n, err)
	}
}
