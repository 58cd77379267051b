package eventbus_test

import (
	"context"
	"testing"

	"github.com/apache/pulsar-client-go/pulsar"
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
	// The consumer span ends right after the handler returns.
	var consumerSpan sdktrace.ReadOnlySpan
	for consumerSpan == nil {
		select {
		case s := <-ended:
			if s.SpanContext().SpanID() == inHandler.SpanID() {
				consumerSpan = s
			}
		case <-ctx.Done():
			t.Fatal("the consumer span never ended")
		}
	}
	if got, want := consumerSpan.Parent().SpanID(), rpcSpan.SpanContext().SpanID(); got != want {
		t.Errorf("consumer span's parent is %s, want the span started before Publish (%s)", got, want)
	}
	if !consumerSpan.Parent().IsRemote() {
		t.Error("consumer span's parent is not marked remote")
	}
	if consumerSpan.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("consumer span kind %v, want consumer", consumerSpan.SpanKind())
	}
}

// endSignal is a span processor that hands every ended span to a channel.
type endSignal chan sdktrace.ReadOnlySpan

func (e endSignal) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e endSignal) OnEnd(s sdktrace.ReadOnlySpan)                   { e <- s }
func (e endSignal) Shutdown(context.Context) error                  { return nil }
func (e endSignal) ForceFlush(context.Context) error                { return nil }
