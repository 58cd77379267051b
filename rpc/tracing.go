package rpc

import (
	"context"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the tracer of this package.
const instrumentationName = "github.com/lbpay-lab/core-dict/rpc"

// traceContext is the W3C Trace Context propagator: the format the caller's
// traceparent header arrives in and the outbox stores.
var traceContext = propagation.TraceContext{}

// serverTracing is the outermost interceptor: it joins the caller's trace
// (its traceparent header, when it sends one) and starts one server span per
// RPC, named for the procedure, so that what the request writes (the outbox
// row's traceparent, see [TraceParent]) is a child of this RPC.
//
// It is otelconnect's server side, written with otel directly: attributes
// rpc.system=connect_rpc, rpc.service, rpc.method, and on failure
// rpc.connect_rpc.error_code. As the RPC conventions say for servers, only
// the codes that mean the server failed (unknown, internal, unavailable,
// data loss, deadline exceeded, unimplemented) set the span's status to
// Error; a caller's mistake (invalid argument, not found, ...) is recorded
// on the span but is not a server error.
type serverTracing struct {
	tracer trace.Tracer
}

func newServerTracing(tp trace.TracerProvider) *serverTracing {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &serverTracing{tracer: tp.Tracer(instrumentationName)}
}

func (s *serverTracing) start(ctx context.Context, spec connect.Spec, header http.Header) (context.Context, trace.Span) {
	ctx = traceContext.Extract(ctx, propagation.HeaderCarrier(header))
	name := strings.TrimPrefix(spec.Procedure, "/")
	service, method, _ := strings.Cut(name, "/")
	return s.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("rpc.system", "connect_rpc"),
			attribute.String("rpc.service", service),
			attribute.String("rpc.method", method),
		))
}

func finish(span trace.Span, err error) {
	if err != nil {
		code := connect.CodeOf(err)
		span.SetAttributes(attribute.String("rpc.connect_rpc.error_code", code.String()))
		if serverFault(code) {
			span.RecordError(err)
			span.SetStatus(codes.Error, code.String())
		}
	}
	span.End()
}

// serverFault tells the codes that are the server's failure, not the
// caller's.
func serverFault(c connect.Code) bool {
	switch c {
	case connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeUnimplemented,
		connect.CodeInternal, connect.CodeUnavailable, connect.CodeDataLoss:
		return true
	}
	return false
}

func (s *serverTracing) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, span := s.start(ctx, req.Spec(), req.Header())
		res, err := next(ctx, req)
		finish(span, err)
		return res, err
	}
}

func (s *serverTracing) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (s *serverTracing) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, span := s.start(ctx, conn.Spec(), conn.RequestHeader())
		err := next(ctx, conn)
		finish(span, err)
		return err
	}
}

// TraceParent returns the W3C traceparent of the trace in ctx, or "" when
// there is none; dict stores it with the outbox rows a request writes.
// Inside an RPC that is the server span's context (or, when tracing is off,
// the caller's own traceparent, passed through).
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}
