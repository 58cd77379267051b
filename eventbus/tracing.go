package eventbus

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/propagation"
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
