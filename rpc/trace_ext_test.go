package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/eventbus"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// endSignal is a span processor that hands every ended span to a channel.
type endSignal chan sdktrace.ReadOnlySpan

func (e endSignal) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e endSignal) OnEnd(s sdktrace.ReadOnlySpan)                   { e <- s }
func (e endSignal) Shutdown(context.Context) error                  { return nil }
func (e endSignal) ForceFlush(context.Context) error                { return nil }

// recordingProvider is an SDK tracer provider whose ended spans are kept in
// memory and also sent to the returned channel.
func recordingProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder, endSignal) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	ended := make(endSignal, 256)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSpanProcessor(ended))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec, ended
}

// sendTrace is a client interceptor that sends the trace of the call's
// context as a traceparent header, as an instrumented caller does.
func sendTrace() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header()))
			return next(ctx, req)
		}
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// TestTraceFollowsKeyFromRPCToConsumer creates a key inside a caller's
// trace, with the outbox relay and a consumer sharing one tracer provider:
// the server span, the relay's publish span of the DirectoryRequest (its
// child), the relay's publish span of the KeyCreated event written when the
// directory answered, and the consumer's span (its child) are one trace, and
// the handler runs in the last.
//
// It needs the relay to start its publish span (eventbus/relay_trace.go's
// tracePublish, called where the relay builds each message's properties).
func TestTraceFollowsKeyFromRPCToConsumer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tp, _, ended := recordingProvider(t)

	db, err := testdb.Create(ctx, "rpctrace")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	topic := "persistent://dict/events/rpc-trace-" + uuid.NewString()
	st, err := newStackTraced(db, redisTestURL(), nil, topic, tp)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()

	cfg := eventbus.DefaultConfig()
	if u := pulsarTestURL(); u != "" {
		cfg.URL = u
	}
	bus, err := eventbus.NewClient(cfg, eventbus.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- eventbus.NewRelay(db.Pool, bus.Pulsar(), eventbus.WithRelayTracerProvider(tp),
			eventbus.WithRelayPollInterval(200*time.Millisecond)).Run(relayCtx)
	}()
	defer func() { stopRelay(); <-relayDone }()

	consumer, err := bus.NewConsumer([]string{topic}, eventbus.WithSubscription("rpc-trace", pulsar.Exclusive),
		eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	type handled struct {
		span trace.SpanContext
		key  string
	}
	got := make(chan handled, 1)
	consumer.Register("KeyCreated", func(ctx context.Context, d eventbus.Delivery) error {
		got <- handled{span: trace.SpanContextFromContext(ctx), key: d.Key}
		return nil
	})
	consumeCtx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- consumer.Run(consumeCtx) }()
	defer func() { stopConsumer(); <-consumerDone; consumer.Close() }()

	// The caller's own span, sent as its traceparent.
	callerCtx, caller := tp.Tracer("caller").Start(ctx, "caller", trace.WithSpanKind(trace.SpanKindClient))
	c := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL,
		connect.WithProtoJSON(), connect.WithInterceptors(sendTrace()))
	res, err := c.CreateKey(callerCtx, createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
	caller.End()
	if err != nil {
		t.Fatal(err)
	}
	// The directory generates the EVP: the event carries its key.
	key := awaitEntry(t, c, res.GetEntry().GetKey(), dictv1.EntryStatus_ENTRY_STATUS_ACTIVE).GetKey()

	var h handled
	select {
	case h = <-got:
	case <-ctx.Done():
		t.Fatal("the KeyCreated event never reached the consumer")
	}

	// Collect the spans: the consumer's ends right after the handler. The
	// write reaches the key events topic in two legs: the RPC's outbox row
	// (a DirectoryRequest), and, once the directory answered, the response
	// handler's row (the KeyCreated event).
	var server, request, publish, consume sdktrace.ReadOnlySpan
	for server == nil || request == nil || publish == nil || consume == nil {
		select {
		case s := <-ended:
			switch {
			case s.SpanKind() == trace.SpanKindServer && s.Name() == "dict.v1.CoreDictService/CreateKey":
				server = s
			case s.SpanKind() == trace.SpanKindProducer && s.Name() == "outbox publish "+reqTopic(db):
				request = s
			case s.SpanKind() == trace.SpanKindProducer && s.Name() == "outbox publish "+topic:
				publish = s
			case s.SpanKind() == trace.SpanKindConsumer && s.SpanContext().SpanID() == h.span.SpanID():
				consume = s
			}
		case <-ctx.Done():
			t.Fatalf("spans ended: server %v, request %v, publish %v, consume %v; want all four", server != nil, request != nil, publish != nil, consume != nil)
		}
		if publish == nil && server != nil && consume != nil && consume.Parent().SpanID() == server.SpanContext().SpanID() {
			t.Fatal("the consumer span is a child of the server span: the relay started no publish span " +
				"(relay.go's publish must call tracePublish where it builds the message properties)")
		}
	}

	traceID := caller.SpanContext().TraceID()
	for _, s := range []sdktrace.ReadOnlySpan{server, request, publish, consume} {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want the caller's %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	for _, link := range []struct {
		child  sdktrace.ReadOnlySpan
		parent trace.SpanContext
		remote bool
	}{
		{child: server, parent: caller.SpanContext(), remote: true},
		{child: request, parent: server.SpanContext(), remote: true},  // through the outbox row
		{child: consume, parent: publish.SpanContext(), remote: true}, // through the message
	} {
		if got, want := link.child.Parent().SpanID(), link.parent.SpanID(); got != want {
			t.Errorf("span %q has parent %s, want %s", link.child.Name(), got, want)
		}
		if link.child.Parent().IsRemote() != link.remote {
			t.Errorf("span %q: parent remote = %v, want %v", link.child.Name(), link.child.Parent().IsRemote(), link.remote)
		}
	}
	if h.key != key {
		t.Errorf("handled key %q, want the created %q", h.key, key)
	}

	wantServer := map[string]string{
		"rpc.system":  "connect_rpc",
		"rpc.service": "dict.v1.CoreDictService",
		"rpc.method":  "CreateKey",
	}
	if diff := cmp.Diff(wantServer, attrMap(server.Attributes())); diff != "" {
		t.Errorf("server span attributes (-want +got):\n%s", diff)
	}
	if server.Status().Code != codes.Unset {
		t.Errorf("server span status %v, want unset", server.Status())
	}
	if got := attrMap(publish.Attributes())["messaging.destination.name"]; got != topic {
		t.Errorf("publish span destination %q, want %q", got, topic)
	}

	// The request's outbox row carries the server span, which is what the
	// relay joined; the event's row, written by the response handler, the
	// same trace.
	var stored, event string
	if err := db.Pool.QueryRow(ctx, "SELECT coalesce(traceparent, '') FROM outbox WHERE aggregate_id = $1 AND event_type = 'DirectoryRequest'",
		res.GetEntry().GetKey()).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if want := "00-" + traceID.String() + "-" + server.SpanContext().SpanID().String() + "-01"; stored != want {
		t.Errorf("outbox traceparent %q, want the server span's %q", stored, want)
	}
	if err := db.Pool.QueryRow(ctx, "SELECT coalesce(traceparent, '') FROM outbox WHERE aggregate_id = $1 AND event_type = 'KeyCreated'",
		key).Scan(&event); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(event, traceID.String()) {
		t.Errorf("KeyCreated outbox traceparent %q, want the caller's trace %s", event, traceID)
	}
}

// TestServerSpans checks the server span of RPCs without a caller trace and
// with failures: a new root per RPC, and a caller's mistake recorded as its
// Connect code but not as a server error.
func TestServerSpans(t *testing.T) {
	t.Parallel()
	tp, rec, _ := recordingProvider(t)
	st, err := newStackTraced(env.db, "", nil, "", tp)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	c := dictv1connect.NewCoreDictServiceClient(clientHTTP(t, partA), st.server.URL, connect.WithProtoJSON())

	for _, tc := range []struct {
		name     string
		call     func() error
		spanName string
		attrs    map[string]string
	}{
		{
			name: "ok",
			call: func() error {
				_, err := c.CreateKey(context.Background(), createReq(dictv1.KeyType_KEY_TYPE_EVP, "", account(partA), naturalOwner(newCPF())))
				return err
			},
			spanName: "dict.v1.CoreDictService/CreateKey",
			attrs:    map[string]string{"rpc.system": "connect_rpc", "rpc.service": "dict.v1.CoreDictService", "rpc.method": "CreateKey"},
		},
		{
			name: "invalid argument",
			call: func() error {
				_, err := c.GetKey(context.Background(), &dictv1.GetKeyRequest{Key: "not a key"})
				if connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Errorf("GetKey(not a key): %v, want invalid_argument", err)
				}
				return nil
			},
			spanName: "dict.v1.CoreDictService/GetKey",
			attrs: map[string]string{"rpc.system": "connect_rpc", "rpc.service": "dict.v1.CoreDictService", "rpc.method": "GetKey",
				"rpc.connect_rpc.error_code": "invalid_argument"},
		},
	} {
		before := len(rec.Ended())
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// The server span ends before the response is written.
		spans := rec.Ended()[before:]
		if len(spans) != 1 {
			t.Fatalf("%s: %d spans ended, want 1", tc.name, len(spans))
		}
		s := spans[0]
		if s.Name() != tc.spanName || s.SpanKind() != trace.SpanKindServer {
			t.Errorf("%s: span %q kind %v, want %q server", tc.name, s.Name(), s.SpanKind(), tc.spanName)
		}
		if s.Parent().IsValid() {
			t.Errorf("%s: span has parent %v, want a root (the caller sent no trace)", tc.name, s.Parent())
		}
		if diff := cmp.Diff(tc.attrs, attrMap(s.Attributes())); diff != "" {
			t.Errorf("%s: attributes (-want +got):\n%s", tc.name, diff)
		}
		if s.Status().Code != codes.Unset {
			t.Errorf("%s: status %v, want unset (not a server error)", tc.name, s.Status())
		}
	}
}
