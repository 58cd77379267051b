package eventbus

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// relayPublishSpan has no I/O: these tests drive it with the SDK and an in-memory span recorder.

const (
	storedTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	storedSpanID  = "00f067aa0ba902b7"
	storedTP      = "00-" + storedTraceID + "-" + storedSpanID + "-01"
	topic         = "persistent://dict/events/keys"
)

func TestRelayPublishSpan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		traceparent string
		// ctxSpan is a span already in the relay's context; it must never become the parent.
		ctxSpan   bool
		wantChild bool
	}{
		{name: "child of the stored traceparent", traceparent: storedTP, wantChild: true},
		{name: "stored traceparent wins over the relay's context", traceparent: storedTP, ctxSpan: true, wantChild: true},
		{name: "no stored traceparent starts a trace", traceparent: ""},
		{name: "no stored traceparent ignores the relay's context", traceparent: "", ctxSpan: true},
		{name: "unparsable traceparent starts a trace", traceparent: "00-not-a-trace-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx := context.Background()
			var relaySpan trace.Span
			if tc.ctxSpan {
				ctx, relaySpan = tp.Tracer("test").Start(ctx, "relay round")
				defer relaySpan.End()
			}
			r := &Relay{}
			WithRelayTracerProvider(tp).apply(r)
			props := map[string]string{"traceparent": tc.traceparent, "event_id": "e1"}
			span := r.tracePublish(ctx, tc.traceparent, topic, "e1", props)
			endPublishSpan(span, nil, nil)

			ended := rec.Ended()
			if len(ended) != 1 {
				t.Fatalf("%d spans ended, want 1", len(ended))
			}
			s := ended[0]
			if s.Name() != "outbox publish "+topic {
				t.Errorf("span name %q, want %q", s.Name(), "outbox publish "+topic)
			}
			if s.SpanKind() != trace.SpanKindProducer {
				t.Errorf("span kind %v, want producer", s.SpanKind())
			}
			if tc.wantChild {
				if got := s.SpanContext().TraceID().String(); got != storedTraceID {
					t.Errorf("trace id %s, want the stored %s", got, storedTraceID)
				}
				if got := s.Parent().SpanID().String(); got != storedSpanID {
					t.Errorf("parent span %s, want the stored %s", got, storedSpanID)
				}
				if !s.Parent().IsRemote() {
					t.Error("parent is not marked remote")
				}
			} else {
				if s.Parent().IsValid() {
					t.Errorf("span has parent %v, want a new root", s.Parent())
				}
				if relaySpan != nil && s.SpanContext().TraceID() == relaySpan.SpanContext().TraceID() {
					t.Error("span joined the relay's own trace")
				}
			}
			// The message carries the publish span, for the consumer's span to be its child.
			want := "00-" + s.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
			if diff := cmp.Diff(map[string]string{"traceparent": want, "event_id": "e1"}, props); diff != "" {
				t.Errorf("message properties (-want +got):\n%s", diff)
			}
			attrs := map[attribute.Key]string{}
			for _, kv := range s.Attributes() {
				attrs[kv.Key] = kv.Value.Emit()
			}
			wantAttrs := map[attribute.Key]string{
				"messaging.system":           "pulsar",
				"messaging.operation.type":   "send",
				"messaging.operation.name":   "send",
				"messaging.destination.name": topic,
				"messaging.message.event_id": "e1",
			}
			if diff := cmp.Diff(wantAttrs, attrs); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEndPublishSpanRecordsFailure(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, span := relayPublishSpan(context.Background(), tp.Tracer("test"), storedTP, topic, "e1")
	endPublishSpan(span, nil, errors.New("producer closed"))
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	if got := ended[0].Status(); got.Code != codes.Error || got.Description != "producer closed" {
		t.Errorf("status %+v, want Error \"producer closed\"", got)
	}
}

// Without an SDK (otel's default), the relay passes the stored traceparent on unchanged, as it did before
// it had spans; a row without one gets none.
func TestRelayPublishSpanWithoutSDK(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ stored, want string }{
		{stored: storedTP, want: storedTP},
		{stored: "", want: ""},
	} {
		r := &Relay{}
		WithRelayTracerProvider(noop.NewTracerProvider()).apply(r)
		props := map[string]string{}
		endPublishSpan(r.tracePublish(context.Background(), tc.stored, topic, "e1", props), nil, nil)
		if got := props["traceparent"]; got != tc.want {
			t.Errorf("stored %q: message traceparent %q, want %q", tc.stored, got, tc.want)
		}
	}
}
