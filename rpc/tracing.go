package rpc

import (
	"context"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"
)

// traceContext is the W3C Trace Context propagator: the format the caller's
// traceparent header arrives in and the outbox stores.
var traceContext = propagation.TraceContext{}

// extractTrace puts the caller's trace context (its traceparent header) into
// the request's context, so that what the request writes carries it on.
// Spans of our own come with the tracing of the service (OpenTelemetry
// SDK); this keeps the caller's trace joined up even without them.
func extractTrace() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			return next(traceContext.Extract(ctx, propagation.HeaderCarrier(req.Header())), req)
		}
	}
}

// TraceParent returns the W3C traceparent of the trace in ctx, or "" when
// there is none; dict stores it with the outbox rows a request writes.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}
