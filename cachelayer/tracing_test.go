package cachelayer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/cachelayer"
)

// TestRedisCommandSpans: every command and pipeline issued inside a trace is a client span, child of the
// caller's, named for the command, with db.system=redis and no key or value in its attributes; a command
// outside any trace makes no span; a Redis error is recorded by its prefix only.
func TestRedisCommandSpans(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c := clClient(t, redisURL(), cachelayer.WithTracerProvider(tp))
	rc := clRueidis(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A key as the service lays them out: it holds the PIX key, which must never reach a span.
	const secret = "+5561987654321"
	key := clPrefix(t) + "{dict:entry:" + secret + "}"

	// Outside any trace: no span (the reconnect probe and background loops stay out of the traces).
	if err := rc.Do(ctx, rc.B().Set().Key(key).Value(secret).Ex(time.Minute).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans ended for a command outside any trace, want none", n)
	}

	pctx, parent := tp.Tracer("test").Start(ctx, "parent")
	if err := rc.Do(pctx, rc.B().Get().Key(key).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for _, r := range rc.DoMulti(pctx, rc.B().Get().Key(key).Build(), rc.B().Ttl().Key(key).Build(), rc.B().Get().Key(key).Build()) {
		if err := r.Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.DoCache(pctx, rc.B().Get().Key(key).Cache(), time.Minute).Error(); err != nil {
		t.Fatal(err)
	}
	// A wrong-type command: the error's text quotes nothing here, but only its prefix is kept anyway.
	if err := rc.Do(pctx, rc.B().Hget().Key(key).Field(secret).Build()).Error(); err == nil {
		t.Fatal("HGET on a string: no error")
	}
	if _, err := c.WatchTx(pctx, []string{key}, func(ctx context.Context, dc rueidis.DedicatedClient) ([]rueidis.Completed, error) {
		return []rueidis.Completed{dc.B().Set().Key(key).Value(secret).Ex(time.Minute).Build()}, nil
	}); err != nil {
		t.Fatal(err)
	}
	parent.End()

	type got struct {
		Name, Op, Status string
		Commands         string
		Parent           bool
	}
	var spans []got
	for _, s := range rec.Ended() {
		if s.Name() == "parent" {
			continue
		}
		g := got{Name: s.Name(), Status: s.Status().Description, Parent: s.Parent().SpanID() == parent.SpanContext().SpanID()}
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %q kind %v, want client", s.Name(), s.SpanKind())
		}
		system := ""
		for _, kv := range s.Attributes() {
			v := kv.Value.Emit()
			if strings.Contains(v, secret) || strings.Contains(v, key) {
				t.Errorf("span %q attribute %s = %q holds the key or the value", s.Name(), kv.Key, v)
			}
			switch kv.Key {
			case "db.system":
				system = v
			case "db.operation":
				g.Op = v
			case "db.redis.commands":
				g.Commands = v
			}
		}
		if system != "redis" {
			t.Errorf("span %q db.system = %q, want redis", s.Name(), system)
		}
		if s.Status().Code == codes.Error && s.Status().Description != "WRONGTYPE" {
			t.Errorf("span %q status %q, want the error's prefix only", s.Name(), s.Status().Description)
		}
		spans = append(spans, g)
	}
	want := []got{
		{Name: "GET", Op: "GET", Parent: true},
		{Name: "pipeline", Op: "pipeline", Commands: `["GET","TTL"]`, Parent: true},
		{Name: "GET", Op: "GET", Parent: true},
		{Name: "HGET", Op: "HGET", Status: "WRONGTYPE", Parent: true},
		{Name: "WATCH", Op: "WATCH", Parent: true},
		{Name: "MULTI", Op: "pipeline", Commands: `["MULTI","SET","EXEC"]`, Parent: true},
	}
	if diff := cmp.Diff(want, spans); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
}
