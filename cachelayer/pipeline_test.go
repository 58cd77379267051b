package cachelayer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

func pipeInts(t *testing.T, msgs []rueidis.RedisMessage) []int64 {
	t.Helper()
	out := make([]int64, len(msgs))
	for i := range msgs {
		n, err := msgs[i].AsInt64()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		out[i] = n
	}
	return out
}

// A pipeline is one round trip of independent commands, each with its own reply.
func TestPipeline(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	p := clPrefix(t) + "{pipe}:"
	res, err := c.Pipeline(ctx,
		rc.B().Set().Key(p+"a").Value("1").Build(),
		rc.B().Incrby().Key(p+"a").Increment(41).Build(),
		rc.B().Get().Key(p+"a").Build(),
		rc.B().Lpush().Key(p+"a").Element("x").Build(), // WRONGTYPE: its own error only
		rc.B().Del().Key(p+"a").Build(),
	)
	if err != nil {
		t.Fatalf("Pipeline: %v", err)
	}
	var got []string
	for _, r := range res {
		if err := r.Error(); err != nil {
			got = append(got, "error")
			continue
		}
		s, _ := r.ToString()
		if n, err := r.AsInt64(); err == nil {
			s = fmt.Sprintf("int %d", n)
		}
		got = append(got, s)
	}
	want := []string{"OK", "int 42", "int 42", "error", "int 1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies mismatch (-want +got):\n%s", diff)
	}
}

// MULTI/EXEC runs all or nothing, atomically; WatchTx aborts when a watched key changes.
func TestTransactions(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	other := clRueidis(t, clClient(t, redisURL()))
	rc := clRueidis(t, c)
	ctx := context.Background()
	p := clPrefix(t) + "{tx}:"
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(p+"n", p+"m", p+"w").Build()) })

	t.Run("MULTI/EXEC", func(t *testing.T) {
		got, err := c.Tx(ctx, rc.B().Incr().Key(p+"n").Build(), rc.B().Incrby().Key(p+"n").Increment(10).Build(), rc.B().Incr().Key(p+"m").Build())
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
		if diff := cmp.Diff([]int64{1, 11, 1}, pipeInts(t, got)); diff != "" {
			t.Errorf("EXEC replies mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("a command refused at queueing aborts all", func(t *testing.T) {
		_, err := c.Tx(ctx, rc.B().Incr().Key(p+"n").Build(), rc.B().Arbitrary("NO-SUCH-COMMAND").Keys(p+"n").Build())
		if !errors.Is(err, cachelayer.ErrTxAborted) {
			t.Fatalf("Tx with an unknown command: err = %v, want ErrTxAborted", err)
		}
		if n, _ := rc.Do(ctx, rc.B().Get().Key(p+"n").Build()).AsInt64(); n != 11 {
			t.Errorf("n = %d after an aborted transaction, want 11 (untouched)", n)
		}
	})
	t.Run("WATCH: unchanged key commits", func(t *testing.T) {
		got, err := c.WatchTx(ctx, []string{p + "w"}, func(ctx context.Context, dc rueidis.DedicatedClient) ([]rueidis.Completed, error) {
			n, err := dc.Do(ctx, dc.B().Get().Key(p+"w").Build()).AsInt64()
			if err != nil && !rueidis.IsRedisNil(err) {
				return nil, err
			}
			return []rueidis.Completed{dc.B().Set().Key(p + "w").Value(strconv.FormatInt(n+5, 10)).Build()}, nil
		})
		if err != nil {
			t.Fatalf("WatchTx: %v", err)
		}
		if len(got) != 1 {
			t.Fatalf("EXEC replies = %d, want 1", len(got))
		}
		if v := wtRaw(t, rc, p+"w"); v != "5" {
			t.Errorf("w = %q, want 5", v)
		}
	})
	t.Run("WATCH: a concurrent change aborts", func(t *testing.T) {
		_, err := c.WatchTx(ctx, []string{p + "w"}, func(ctx context.Context, dc rueidis.DedicatedClient) ([]rueidis.Completed, error) {
			// Another client changes the watched key between our read and our EXEC.
			if err := other.Do(ctx, other.B().Set().Key(p+"w").Value("changed").Build()).Error(); err != nil {
				return nil, err
			}
			return []rueidis.Completed{dc.B().Set().Key(p + "w").Value("ours").Build()}, nil
		})
		if !errors.Is(err, cachelayer.ErrTxAborted) {
			t.Fatalf("WatchTx with a concurrent change: err = %v, want ErrTxAborted", err)
		}
		if v := wtRaw(t, rc, p+"w"); v != "changed" {
			t.Errorf("w = %q, want the other client's \"changed\"", v)
		}
	})
}
