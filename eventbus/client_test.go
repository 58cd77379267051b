package eventbus_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbpay-lab/core-dict/eventbus"
)

// newClient returns an eventbus client of the local broker with its own registry, failing the test with
// how to start the broker when it is not there.
func newClient(t *testing.T, opts ...eventbus.ClientOption) (*eventbus.Client, *prometheus.Registry) {
	t.Helper()
	newPulsarClient(t) // fails with how to start Pulsar when it is not reachable
	cfg, err := eventbus.ConfigFromEnv(func(k string) string {
		if k == "PULSAR_URL" {
			return pulsarURL()
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts = append([]eventbus.ClientOption{
		eventbus.WithRegisterer(reg),
		eventbus.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		eventbus.WithTimeouts(5*time.Second, 30*time.Second),
	}, opts...)
	c, err := eventbus.NewClient(cfg, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v: %s", err, howToStart)
	}
	t.Cleanup(c.Close)
	return c, reg
}

func testTopic(t *testing.T, what string) string {
	return "persistent://" + eventsNamespace + "/test-" + what + "-" + nonce(t)
}

// run runs c until the test ends.
func run(t *testing.T, c *eventbus.Consumer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		c.Close()
	})
}

// testCtx bounds a test's waiting; reaching it fails the test, it is not a timing assertion.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sink collects what handlers receive.
type sink struct {
	mu  sync.Mutex
	got []eventbus.Delivery
	ch  chan struct{}
}

func newSink() *sink { return &sink{ch: make(chan struct{}, 1)} }

func (s *sink) handle(_ context.Context, d eventbus.Delivery) error {
	s.mu.Lock()
	s.got = append(s.got, d)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the deliveries once there are at least n.
func (s *sink) wait(t *testing.T, ctx context.Context, n int) []eventbus.Delivery {
	t.Helper()
	for {
		s.mu.Lock()
		if len(s.got) >= n {
			got := append([]eventbus.Delivery(nil), s.got...)
			s.mu.Unlock()
			return got
		}
		have := len(s.got)
		s.mu.Unlock()
		select {
		case <-s.ch:
		case <-ctx.Done():
			t.Fatalf("received %d deliveries, want %d: %v", have, n, ctx.Err())
		}
	}
}

func TestNewClientTwiceOnOneRegistry(t *testing.T) {
	t.Parallel()
	_, reg := newClient(t)
	cfg := eventbus.DefaultConfig()
	cfg.URL = pulsarURL()
	c2, err := eventbus.NewClient(cfg, eventbus.WithRegisterer(reg))
	if err != nil {
		t.Fatalf("second NewClient on the same registry: %v", err)
	}
	c2.Close()
	if _, err := eventbus.NewMetrics(reg); err != nil {
		t.Fatalf("NewMetrics on a registry that has them: %v", err)
	}
}

// recordingHandler keeps the slog records it handles.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
	parent  *recordingHandler
}

func (h *recordingHandler) root() *recordingHandler {
	for h.parent != nil {
		h = h.parent
	}
	return h
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	root := h.root()
	root.mu.Lock()
	root.records = append(root.records, r)
	root.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{attrs: append(append([]slog.Attr(nil), h.attrs...), as...), parent: h}
}
func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

func TestPulsarClientLogsThroughSlog(t *testing.T) {
	t.Parallel()
	rec := &recordingHandler{}
	client, _ := newClient(t, eventbus.WithLogger(slog.New(rec)))
	p, err := client.NewProducer(testTopic(t, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.records {
		fromLib, hasTopic := false, false
		r.Attrs(func(a slog.Attr) bool {
			fromLib = fromLib || (a.Key == "lib" && a.Value.String() == "pulsar-client-go")
			hasTopic = hasTopic || a.Key == "topic"
			return true
		})
		if fromLib && hasTopic {
			return // a pulsar-client-go record, with its fields as attributes
		}
	}
	t.Errorf("no pulsar-client-go record with a topic attribute among %d records", len(rec.records))
}
