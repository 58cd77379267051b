package eventbus

import (
	"context"
	"maps"

	"github.com/apache/pulsar-client-go/pulsar"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the tracer of this package.
const instrumentationName = "github.com/lbpay-lab/core-dict/eventbus"

// Property names every producer sets and every consumer reads.
const (
	PropertyEventID   = "event_id"
	PropertyEventType = "event_type"
)

// InjectTrace writes the trace context of ctx (W3C traceparent, tracestate, baggage with the default
// propagator) into props. The outbox writer uses it to store a request's trace with its event.
func InjectTrace(ctx context.Context, p propagation.TextMapPropagator, props map[string]string) {
	p.Inject(ctx, propagation.MapCarrier(props))
}

// ExtractTrace returns ctx carrying the remote span context found in props, if any.
func ExtractTrace(ctx context.Context, p propagation.TextMapPropagator, props map[string]string) context.Context {
	return p.Extract(ctx, propagation.MapCarrier(props))
}

func cloneProps(props map[string]string, extra int) map[string]string {
	out := make(map[string]string, len(props)+extra)
	maps.Copy(out, props)
	return out
}

// startPublish starts the producer span "<topic> publish" of a direct publish (not the relay's: see
// relay_trace.go) as a child of ctx's span, and returns the context to inject into the message, so the
// consumer's span is its child. It carries the topic, the event id and type, never the message key (a
// PIX key).
func (c *Client) startPublish(ctx context.Context, topic string, m Message) (context.Context, trace.Span) {
	ctx, span := c.tracer.Start(ctx, baseTopic(topic)+" publish", trace.WithSpanKind(trace.SpanKindProducer))
	setSendAttributes(span, topic, m.EventID, attribute.String("messaging.message.event_type", m.EventType))
	return ctx, span
}

// setSendAttributes gives a producer span that records its messaging attributes (a span that does not
// record, unsampled or no-op, costs nothing more).
func setSendAttributes(span trace.Span, topic, eventID string, extra ...attribute.KeyValue) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("messaging.system", "pulsar"),
		attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.operation.name", "send"),
		attribute.String("messaging.destination.name", topic),
		attribute.String("messaging.message.event_id", eventID),
	)
	span.SetAttributes(extra...)
}

// startProcess starts the consumer span "<topic> process" of a received message, a child of the trace
// context its properties carry (the producer's span).
func (c *Client) startProcess(ctx context.Context, msg pulsar.Message) (context.Context, trace.Span) {
	props := msg.Properties()
	topic := baseTopic(msg.Topic())
	ctx = ExtractTrace(ctx, c.propagator, props)
	ctx, span := c.tracer.Start(ctx, topic+" process", trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "pulsar"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", msg.ID().String()),
			attribute.String("messaging.message.event_id", props[PropertyEventID]),
			attribute.String("messaging.message.event_type", props[PropertyEventType]),
		)
	}
	return ctx, span
}

// endSpan ends span with err's outcome.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
