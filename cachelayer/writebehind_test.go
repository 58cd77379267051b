package cachelayer_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

func init() {
	// The kill test re-runs this binary as the process to be killed.
	if os.Getenv("WRITE_BEHIND_CHILD") != "" {
		writeBehindChild()
	}
}

// wbService is the write-behind counter's real store: dict's batch-once
// application into a fresh PostgreSQL database of the test's own.
func wbService(t *testing.T) *dict.Service {
	t.Helper()
	db, err := testdb.Create(context.Background(), "cachelayer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return dict.NewService(dict.ServiceConfig{Pool: db.App})
}

func wbName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

func TestWriteBehindFlushesBatches(t *testing.T) {
	t.Parallel()
	svc := wbService(t)
	r := newRedisClient(t)
	name := wbName(t)
	w := cachelayer.NewWriteBehindCounter(cachelayer.FixedRedis(r), name, svc.ApplyLookupCounts)
	ctx := context.Background()
	keyA, keyB := name+"-a", name+"-b"
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Incr(ctx, keyA, 1)
			w.Incr(ctx, keyB, 2)
		}()
	}
	wg.Wait()
	if n, _ := svc.LookupCount(ctx, keyA); n != 0 {
		t.Fatalf("counts reached PostgreSQL before a flush: %d", n)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]int64{keyA: 50, keyB: 100} {
		if n, err := svc.LookupCount(ctx, key); err != nil || n != want {
			t.Errorf("count of %s = %d (%v), want %d", key, n, err, want)
		}
	}
}

// TestWriteBehindBatchAppliedOnce fails the acknowledgement of a batch
// after the store applied it: the retry must not count it twice.
func TestWriteBehindBatchAppliedOnce(t *testing.T) {
	t.Parallel()
	svc := wbService(t)
	r := newRedisClient(t)
	name := wbName(t)
	failOnce := true
	flush := func(ctx context.Context, id string, counts map[string]int64) error {
		if err := svc.ApplyLookupCounts(ctx, id, counts); err != nil {
			return err
		}
		if failOnce {
			failOnce = false
			return errors.New("lost acknowledgement")
		}
		return nil
	}
	w := cachelayer.NewWriteBehindCounter(cachelayer.FixedRedis(r), name, flush)
	ctx := context.Background()
	w.Incr(ctx, name, 7)
	if err := w.Flush(ctx); err == nil {
		t.Fatal("first flush reported success")
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := svc.LookupCount(ctx, name); n != 7 {
		t.Errorf("count = %d, want 7 (a retried batch must apply once)", n)
	}
}

// TestWriteBehindSurvivesKill counts in a child process that is killed
// with SIGKILL before it can flush; a new counter then flushes every count.
func TestWriteBehindSurvivesKill(t *testing.T) {
	t.Parallel()
	svc := wbService(t)
	name := wbName(t)
	const n = 300
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WRITE_BEHIND_CHILD="+name, "WRITE_BEHIND_N="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "counted\n" {
		t.Fatalf("child said %q (%v)", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	ctx := context.Background()
	if c, _ := svc.LookupCount(ctx, name); c != 0 {
		t.Fatalf("the killed child flushed %d counts; it must not have had the chance", c)
	}
	w := cachelayer.NewWriteBehindCounter(cachelayer.FixedRedis(newRedisClient(t)), name, svc.ApplyLookupCounts)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := svc.LookupCount(ctx, name); err != nil || c != n {
		t.Errorf("after kill and restart: count = %d (%v), want %d", c, err, n)
	}
}

// writeBehindChild counts and then waits to be killed, never flushing.
func writeBehindChild() {
	name := os.Getenv("WRITE_BEHIND_CHILD")
	n, _ := strconv.Atoi(os.Getenv("WRITE_BEHIND_N"))
	opt, err := rueidis.ParseURL(redisURL())
	if err != nil {
		panic(err)
	}
	r, err := rueidis.NewClient(opt)
	if err != nil {
		panic(err)
	}
	w := cachelayer.NewWriteBehindCounter(cachelayer.FixedRedis(r), name, func(context.Context, string, map[string]int64) error {
		return errors.New("the child never flushes")
	})
	for i := 0; i < n; i++ {
		w.Incr(context.Background(), name, 1)
	}
	fmt.Println("counted")
	time.Sleep(time.Minute)
	os.Exit(1)
}

// TestWriteBehindWithoutRedis keeps counts in process when Redis fails and
// flushes them straight to the store.
func TestWriteBehindWithoutRedis(t *testing.T) {
	t.Parallel()
	svc := wbService(t)
	name := wbName(t)
	// A client whose Redis went away: closed before use.
	r := newRedisClient(t)
	r.Close()
	w := cachelayer.NewWriteBehindCounter(cachelayer.FixedRedis(r), name, svc.ApplyLookupCounts)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		w.Incr(ctx, name, 1)
	}
	if err := w.Flush(ctx); err == nil {
		t.Log("flush reported no Redis error")
	}
	if c, _ := svc.LookupCount(ctx, name); c != 5 {
		t.Errorf("count = %d, want 5 kept in process and flushed to the store", c)
	}
}
