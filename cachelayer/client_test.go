package cachelayer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/rueidis"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// The tests that stop, start or pause Redis use their own Redis on this port (never the shared one on
// 6379), started and stopped with scripts/deps.sh; clOutageMu serializes them.
const clOutagePort = "6391"

var clOutageMu sync.Mutex

func clOutageURL() string { return "redis://127.0.0.1:" + clOutagePort + "/0" }

// clDeps runs `DEPS_REDIS_PORT=6391 scripts/deps.sh action redis`.
func clDeps(t testing.TB, action string) {
	t.Helper()
	cmd := exec.Command("../scripts/deps.sh", action, "redis")
	cmd.Env = append(cmd.Environ(), "DEPS_REDIS_PORT="+clOutagePort)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("DEPS_REDIS_PORT=%s scripts/deps.sh %s redis: %v\n%s", clOutagePort, action, err, out)
	}
}

// clOutage takes the outage lock and starts the Redis on clOutagePort; it stops it when the test ends.
func clOutage(t *testing.T) {
	t.Helper()
	clOutageMu.Lock()
	t.Cleanup(clOutageMu.Unlock)
	clDeps(t, "up")
	t.Cleanup(func() { clDeps(t, "down") })
}

// clConfig is the default configuration for url, with short timeouts so that failures show quickly.
func clConfig(url string) cachelayer.Config {
	c := cachelayer.DefaultConfig()
	c.URL = url
	c.DialTimeout = time.Second
	c.ReadTimeout = time.Second
	c.WriteTimeout = 300 * time.Millisecond
	return c
}

// clClient returns a client of url that must be connected, or fails saying how to start Redis.
func clClient(t testing.TB, url string, opts ...cachelayer.Option) *cachelayer.Client {
	t.Helper()
	c := clClientMaybe(t, clConfig(url), opts...)
	if !c.Available() {
		t.Fatalf("Redis is not reachable at %s: start the local services with `scripts/deps.sh up` (or `DEPS_REDIS_PORT=%s scripts/deps.sh up redis` for the outage tests)", url, clOutagePort)
	}
	return c
}

// clClientMaybe returns a client of cfg, connected or not.
func clClientMaybe(t testing.TB, cfg cachelayer.Config, opts ...cachelayer.Option) *cachelayer.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts = append([]cachelayer.Option{cachelayer.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	c, err := cachelayer.NewClient(ctx, cfg, opts...)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", cfg.URL, err)
	}
	t.Cleanup(c.Close)
	return c
}

// clRueidis returns c's rueidis client, failing the test if c is unavailable.
func clRueidis(t testing.TB, c *cachelayer.Client) rueidis.Client {
	t.Helper()
	rc, err := c.Rueidis()
	if err != nil {
		t.Fatalf("Rueidis(): %v", err)
	}
	return rc
}

// clPrefix is a key prefix of its own for one test, with a hash tag so a test's keys share a slot.
func clPrefix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "cl-test:" + hex.EncodeToString(b) + ":"
}

// clWaitAvailable waits up to 15 s for c to recover by itself.
func clWaitAvailable(t testing.TB, c *cachelayer.Client) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !c.Available() {
		if time.Now().After(deadline) {
			t.Fatalf("the client did not recover within 15 s of Redis coming back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clMetric sums the samples of the metric name whose labels include labels.
func clMetric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !clHasLabel(m, k, v) {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func clHasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// clStore is the store side of the strategies in tests: an in-memory table that fails on demand and
// counts its reads. It stands for PostgreSQL; Redis is always the real one.
type clStore struct {
	mu    sync.Mutex
	rows  map[string]clRow
	loads map[string]int
	fail  bool
	delay time.Duration
}

type clRow struct {
	value   int
	version int64
}

var (
	errClStoreDown = errors.New("store is down")
	errClNotFound  = errors.New("not found")
)

func newClStore() *clStore {
	return &clStore{rows: map[string]clRow{}, loads: map[string]int{}}
}

func (s *clStore) load(ctx context.Context, key string) (int, int64, error) {
	s.mu.Lock()
	s.loads[key]++
	row, ok := s.rows[key]
	fail, delay := s.fail, s.delay
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	switch {
	case fail:
		return 0, 0, errClStoreDown
	case !ok:
		return 0, 0, fmt.Errorf("%s: %w", key, errClNotFound)
	}
	return row.value, row.version, nil
}

// set returns a store step that writes key=value at version.
func (s *clStore) set(key string, value int, version int64) func(context.Context) error {
	return func(context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail {
			return errClStoreDown
		}
		s.rows[key] = clRow{value, version}
		return nil
	}
}

// del returns a store step that deletes key.
func (s *clStore) del(key string) func(context.Context) error {
	return func(context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail {
			return errClStoreDown
		}
		delete(s.rows, key)
		return nil
	}
}

func (s *clStore) setFail(fail bool) {
	s.mu.Lock()
	s.fail = fail
	s.mu.Unlock()
}

func (s *clStore) loadCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads[key]
}

func (s *clStore) row(key string) (clRow, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[key]
	return r, ok
}

// An unreachable Redis at start is not an error: the client starts unavailable, reports ErrUnavailable,
// and connects by itself once Redis answers.
func TestClientStartsWithoutRedisAndRecovers(t *testing.T) {
	t.Parallel()
	clOutage(t)
	clDeps(t, "down")

	c := clClientMaybe(t, clConfig(clOutageURL()))
	if c.Available() {
		t.Fatal("Available() = true with Redis down")
	}
	if _, err := c.Rueidis(); !errors.Is(err, cachelayer.ErrUnavailable) {
		t.Fatalf("Rueidis() with Redis down: err = %v, want ErrUnavailable", err)
	}
	clDeps(t, "up")
	clWaitAvailable(t, c)
	rc := clRueidis(t, c)
	if err := rc.Do(context.Background(), rc.B().Ping().Build()).Error(); err != nil {
		t.Fatalf("PING after recovery: %v", err)
	}
}

// Failed tells Redis failures from replies and from the caller giving up; only failures make the client
// unavailable.
func TestClientFailedClassifiesErrors(t *testing.T) {
	t.Parallel()
	c := clClient(t, redisURL())
	rc := clRueidis(t, c)
	ctx := context.Background()
	key := clPrefix(t) + "list"
	if err := rc.Do(ctx, rc.B().Lpush().Key(key).Element("x").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Do(context.Background(), rc.B().Del().Key(key).Build()) })
	wrongType := rc.Do(ctx, rc.B().Get().Key(key).Build()).Error()
	nilReply := rc.Do(ctx, rc.B().Get().Key(key+":absent").Build()).Error()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	gaveUp := rc.Do(canceled, rc.B().Get().Key(key).Build()).Error()

	for _, test := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"no error", ctx, nil, false},
		{"nil reply", ctx, nilReply, false},
		{"WRONGTYPE reply", ctx, wrongType, false},
		{"caller canceled", canceled, gaveUp, false},
	} {
		if got := c.Failed(test.ctx, test.err); got != test.want {
			t.Errorf("%s: Failed(%v) = %v, want %v", test.name, test.err, got, test.want)
		}
	}
	if !c.Available() {
		t.Fatal("the client became unavailable after errors that are not failures")
	}
}
