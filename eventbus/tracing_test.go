package eventbus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/eventbus"
)

func TestTraceContextPropagatesFromPublishToHandler(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	ended := make(chan sdktrace.ReadOnlySpan, 16)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSpanProcessor(endSignal(ended)))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	client, _ := newClient(t, eventbus.WithTracerProvider(tp))
	ctx := testCtx(t)
	topic := testTopic(t, "trace")

	c, err := client.NewConsumer([]string{topic}, eventbus.WithSubscription("trace", pulsar.Exclusive), eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan trace.SpanContext, 1)
	c.Register("KeyCreated", func(ctx context.Context, d eventbus.Delivery) error {
		handled <- trace.SpanContextFromContext(ctx)
		return nil
	})
	run(t, c)

	p, err := client.NewProducer(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rpcCtx, rpcSpan := tp.Tracer("test").Start(ctx, "CreateEntry")
	if _, err := p.Publish(rpcCtx, eventbus.Message{Key: "k", Payload: []byte("p"), EventType: "KeyCreated", EventID: "e1"}); err != nil {
		t.Fatal(err)
	}
	rpcSpan.End()

	var inHandler trace.SpanContext
	select {
	case inHandler = <-handled:
	case <-ctx.Done():
		t.Fatal("the event was not handled")
	}
	if inHandler.TraceID() != rpcSpan.SpanContext().TraceID() {
		t.Errorf("handler runs in trace %s, want the publisher's %s", inHandler.TraceID(), rpcSpan.SpanContext().TraceID())
	}
	// The publish span ended when the broker answered; the consumer span ends right after the handler
	// returns.
	var publishSpan, consumerSpan sdktrace.ReadOnlySpan
	for publishSpan == nil || consumerSpan == nil {
		select {
		case s := <-ended:
			switch {
			case s.SpanContext().SpanID() == inHandler.SpanID():
				consumerSpan = s
			case s.SpanKind() == trace.SpanKindProducer:
				publishSpan = s
			}
		case <-ctx.Done():
			t.Fatalf("spans ended: publish %v, consume %v; want both", publishSpan != nil, consumerSpan != nil)
		}
	}
	if got, want := publishSpan.Parent().SpanID(), rpcSpan.SpanContext().SpanID(); got != want {
		t.Errorf("publish span's parent is %s, want the span Publish was called in (%s)", got, want)
	}
	if publishSpan.Name() != topic+" publish" {
		t.Errorf("publish span %q, want %q", publishSpan.Name(), topic+" publish")
	}
	wantPublish := map[string]string{
		"messaging.system": "pulsar", "messaging.operation.type": "send", "messaging.operation.name": "send",
		"messaging.destination.name": topic, "messaging.message.event_id": "e1", "messaging.message.event_type": "KeyCreated",
	}
	if diff := cmp.Diff(wantPublish, attrs(publishSpan)); diff != "" {
		t.Errorf("publish span attributes (-want +got):\n%s", diff)
	}
	if got, want := consumerSpan.Parent().SpanID(), publishSpan.SpanContext().SpanID(); got != want {
		t.Errorf("consumer span's parent is %s, want the publish span (%s)", got, want)
	}
	if !consumerSpan.Parent().IsRemote() {
		t.Error("consumer span's parent is not marked remote")
	}
	if consumerSpan.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("consumer span kind %v, want consumer", consumerSpan.SpanKind())
	}
}

// TestRequestReplyIsOneTrace: a request published inside a trace, answered by a responder that publishes
// its reply from its handler, is one trace: the request's publish span, the responder's consume span, the
// reply's publish span and the requester's consume span of the reply, each the child of the one before.
// The message key (a PIX key in the service) is in no span.
func TestRequestReplyIsOneTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	client, _ := newClient(t, eventbus.WithTracerProvider(tp))
	ctx := testCtx(t)
	reqTopic, replyTopic := testTopic(t, "trace-req"), testTopic(t, "trace-reply")
	const key = "+5561987654321"

	r, err := client.NewRequester(reqTopic, replyTopic, func(payload []byte, _ map[string]string) (string, error) {
		return string(payload), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { stop(); <-done; r.Close() }()
	responder, err := client.NewConsumer([]string{reqTopic}, eventbus.WithSubscription("responder", pulsar.Exclusive), eventbus.WithDeadLetter("", 0))
	if err != nil {
		t.Fatal(err)
	}
	replies, err := client.NewProducer(r.ReplyTo())
	if err != nil {
		t.Fatal(err)
	}
	defer replies.Close()
	responder.Register("Ask", func(ctx context.Context, d eventbus.Delivery) error {
		_, err := replies.Publish(ctx, eventbus.Message{Key: d.Key, Payload: []byte(d.EventID), EventID: d.EventID, EventType: "Answer"})
		return err
	})
	run(t, responder)

	cctx, caller := tp.Tracer("test").Start(ctx, "LookupKey")
	if _, err := r.Request(cctx, "corr-1", eventbus.Message{Key: key, EventID: "corr-1", EventType: "Ask", Payload: []byte("q")}); err != nil {
		t.Fatal(err)
	}
	caller.End()
	// The reply's consume span ends right after the waiter got the payload.
	var chain []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		chain = chain[:0]
		byParent := map[trace.SpanID]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			byParent[s.Parent().SpanID()] = s
		}
		for id := caller.SpanContext().SpanID(); ; {
			s, ok := byParent[id]
			if !ok {
				break
			}
			chain = append(chain, s)
			id = s.SpanContext().SpanID()
		}
		if len(chain) >= 4 || time.Now().After(deadline) {
			break
		}
	}
	var got []string
	for _, s := range chain {
		got = append(got, s.SpanKind().String()+" "+s.Name())
		if s.SpanContext().TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %q in trace %s, want the caller's", s.Name(), s.SpanContext().TraceID())
		}
		for k, v := range attrs(s) {
			if strings.Contains(v, key) {
				t.Errorf("span %q attribute %s holds the message key", s.Name(), k)
			}
		}
	}
	want := []string{"producer " + reqTopic + " publish", "consumer " + reqTopic + " process",
		"producer " + r.ReplyTo() + " publish", "consumer " + r.ReplyTo() + " process"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("span chain from the caller's span (-want +got):\n%s", diff)
	}
	if len(chain) == 4 {
		if outcome := attrs(chain[3])["messaging.request_reply.outcome"]; outcome != "replied" {
			t.Errorf("reply span outcome %q, want replied", outcome)
		}
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// endSignal is a span processor that hands every ended span to a channel.
type endSignal chan sdktrace.ReadOnlySpan

func (e endSignal) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e endSignal) OnEnd(s sdktrace.ReadOnlySpan)                   { e <- s }
func (e endSignal) Shutdown(context.Context) error                  { return nil }
func (e endSignal) ForceFlush(context.Context) error                { return nil }
