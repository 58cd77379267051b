package eventbus

import (
	"context"
	"sync"

	"github.com/apache/pulsar-client-go/pulsar"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The outbox relay's tracing. Each row it sends gets a producer span "outbox publish <topic>", a child of
// the trace the row was written in (the traceparent dict stored with it: the RPC's server span), and the
// message carries that producer span's traceparent, so the consumer's span is its child:
//
//	RPC (server) → outbox publish <topic> (producer) → <topic> process (consumer)
//
// The relay needs one field in [Relay]:
//
//	tracer trace.Tracer // nil: otel's global provider, looked up when a row is sent
//
// set by [WithRelayTracerProvider].

// relayPropagator writes the trace context into the message properties. It is W3C Trace Context, fixed
// whatever the process configured: the outbox stores a traceparent and the bus carries one.
var relayPropagator propagation.TextMapPropagator = propagation.TraceContext{}

// WithRelayTracerProvider makes the relay start one producer span per row it sends with tp (default:
// otel's global provider).
func WithRelayTracerProvider(tp trace.TracerProvider) RelayOption {
	return relayOptionFunc(func(r *Relay) { r.tracer = tp.Tracer(instrumentationName) })
}

// publishTracer is the relay's tracer: the one [WithRelayTracerProvider] set, else the global one.
func (r *Relay) publishTracer() trace.Tracer {
	if r.tracer != nil {
		return r.tracer
	}
	return otel.GetTracerProvider().Tracer(instrumentationName)
}

// tracePublish starts the producer span of one outbox row (see [relayPublishSpan]) and writes its
// trace context into props, replacing whatever traceparent props held. The caller ends the span with
// [endPublishSpan] when the broker answers.
func (r *Relay) tracePublish(ctx context.Context, traceparent, topic, eventID string, props map[string]string) trace.Span {
	ctx, span := relayPublishSpan(ctx, r.publishTracer(), traceparent, topic, eventID)
	InjectTrace(ctx, relayPropagator, props)
	return span
}

// The options and names of the relay's publish spans, made once: the relay starts a span per row.
var (
	relaySpanOpts     = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	relayRootSpanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithNewRoot()}
	relaySpanNames    sync.Map // topic → "outbox publish <topic>"
)

func relaySpanName(topic string) string {
	if name, ok := relaySpanNames.Load(topic); ok {
		return name.(string)
	}
	name := "outbox publish " + topic
	relaySpanNames.Store(topic, name)
	return name
}

// traceparentCarrier is a stored traceparent as the carrier the propagator extracts from (a map of one
// entry per row would only be garbage).
type traceparentCarrier string

func (c traceparentCarrier) Get(key string) string {
	if key == "traceparent" {
		return string(c)
	}
	return ""
}
func (traceparentCarrier) Set(string, string) {}
func (traceparentCarrier) Keys() []string     { return []string{"traceparent"} }

// relayPublishSpan starts the producer span "outbox publish <topic>" for the outbox row eventID, a child
// of the row's stored traceparent; a row without one (or with one that does not parse) starts a new
// trace. The returned context carries the span: [InjectTrace] it into the message properties. A tracer
// that records nothing (otel's default without an SDK) keeps the stored span context, so the message
// then carries the row's traceparent unchanged.
func relayPublishSpan(ctx context.Context, tracer trace.Tracer, traceparent, topic, eventID string) (context.Context, trace.Span) {
	// The relay's own context carries no trace of interest: the row's is the parent, or none.
	if trace.SpanContextFromContext(ctx).IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	}
	if traceparent != "" {
		ctx = relayPropagator.Extract(ctx, traceparentCarrier(traceparent))
	}
	opts := relaySpanOpts
	if !trace.SpanContextFromContext(ctx).IsValid() {
		opts = relayRootSpanOpts
	}
	ctx, span := tracer.Start(ctx, relaySpanName(topic), opts...)
	setSendAttributes(span, topic, eventID)
	return ctx, span
}

// endPublishSpan ends a publish span with the broker's answer: the message id, or the error.
func endPublishSpan(span trace.Span, id pulsar.MessageID, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	switch {
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case id != nil:
		span.SetAttributes(attribute.String("messaging.message.id", id.String()))
		if id.LedgerID() == -1 && id.EntryID() == -1 {
			// The broker's deduplication dropped it: an earlier send of this row is what consumers get.
			span.SetAttributes(attribute.Bool("messaging.pulsar.duplicate", true))
		}
	}
	span.End()
}
