package telemetry

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// pgxInstrumentation names the tracer of the PostgreSQL spans.
const pgxInstrumentation = "github.com/lbpay-lab/core-dict/internal/telemetry/pgx"

// PGXTracer starts a client span for every PostgreSQL query, batch and connection made inside a trace:
// set it as a pool's ConnConfig.Tracer. A query whose context carries no span (the relay's polling, the
// schedulers' ticks) makes none, so background work does not flood the collector with one-span traces.
//
// A span is named for the query: sqlc's name (the "-- name: GetEntry :one" comment that opens every
// generated statement), else the statement's first word (BEGIN, COMMIT, SELECT, ...). It carries
// db.system=postgresql, db.name, server.address/port, db.operation and, for sqlc's statements only,
// db.statement: their text, whose values are all $n placeholders. Argument values are never recorded, nor
// is the text of hand-written statements (which could hold literals), nor a server error's message (which
// can quote a value): a failed query carries its SQLSTATE only.
type PGXTracer struct {
	tracer trace.Tracer
}

var (
	_ pgx.QueryTracer   = (*PGXTracer)(nil)
	_ pgx.BatchTracer   = (*PGXTracer)(nil)
	_ pgx.ConnectTracer = (*PGXTracer)(nil)
)

// NewPGXTracer returns a tracer starting its spans with tp (nil: otel's global provider, looked up now;
// spans follow a provider set later with otel.SetTracerProvider).
func NewPGXTracer(tp trace.TracerProvider) *PGXTracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &PGXTracer{tracer: tp.Tracer(pgxInstrumentation)}
}

// pgxSpanKey marks the context a PGXTracer returned with the span it started, so that the end hook ends
// that span and never the caller's.
type pgxSpanKey struct{}

func (t *PGXTracer) start(ctx context.Context, conn *pgx.Conn, name, operation, statement string) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 6)
		attrs = append(attrs, attribute.String("db.system", "postgresql"), attribute.String("db.operation", operation))
		if statement != "" {
			attrs = append(attrs, attribute.String("db.statement", statement))
		}
		if conn != nil {
			if cc := conn.Config(); cc != nil {
				attrs = append(attrs, attribute.String("db.name", cc.Database),
					attribute.String("server.address", cc.Host), attribute.Int("server.port", int(cc.Port)))
			}
		}
		span.SetAttributes(attrs...)
	}
	return context.WithValue(ctx, pgxSpanKey{}, span)
}

func spanOf(ctx context.Context) trace.Span {
	s, _ := ctx.Value(pgxSpanKey{}).(trace.Span)
	return s
}

func endPGXSpan(span trace.Span, tag pgconn.CommandTag, err error, rows bool) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		if err != nil {
			setDBError(span, err)
		} else if rows {
			span.SetAttributes(attribute.Int64("db.rows_affected", tag.RowsAffected()))
		}
	}
	span.End()
}

// setDBError marks span failed with what identifies the error without quoting data: the SQLSTATE of a
// server error, else the kind of failure.
func setDBError(span trace.Span, err error) {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		span.SetAttributes(attribute.String("db.response.status_code", pe.Code), attribute.String("error.type", pe.Code))
		span.SetStatus(codes.Error, "SQLSTATE "+pe.Code)
	case errors.Is(err, context.Canceled):
		span.SetAttributes(attribute.String("error.type", "canceled"))
		span.SetStatus(codes.Error, "canceled")
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		span.SetAttributes(attribute.String("error.type", "timeout"))
		span.SetStatus(codes.Error, "timeout")
	default:
		span.SetAttributes(attribute.String("error.type", "other"))
		span.SetStatus(codes.Error, "query failed")
	}
}

// TraceQueryStart implements [pgx.QueryTracer].
func (t *PGXTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	name, statement := DescribeSQL(data.SQL)
	return t.start(ctx, conn, name, name, statement)
}

// TraceQueryEnd implements [pgx.QueryTracer].
func (t *PGXTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	endPGXSpan(spanOf(ctx), data.CommandTag, data.Err, true)
}

// TraceBatchStart implements [pgx.BatchTracer]: one span for the batch, an event per query.
func (t *PGXTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx = t.start(ctx, conn, "batch", "batch", "")
	if span := spanOf(ctx); span != nil && span.IsRecording() && data.Batch != nil {
		span.SetAttributes(attribute.Int("db.operation.batch.size", data.Batch.Len()))
	}
	return ctx
}

// TraceBatchQuery implements [pgx.BatchTracer].
func (t *PGXTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	span := spanOf(ctx)
	if span == nil || !span.IsRecording() {
		return
	}
	name, _ := DescribeSQL(data.SQL)
	attrs := []attribute.KeyValue{attribute.String("db.operation", name)}
	var pe *pgconn.PgError
	if errors.As(data.Err, &pe) {
		attrs = append(attrs, attribute.String("db.response.status_code", pe.Code))
	} else if data.Err != nil {
		attrs = append(attrs, attribute.String("error.type", "other"))
	}
	span.AddEvent("query", trace.WithAttributes(attrs...))
}

// TraceBatchEnd implements [pgx.BatchTracer].
func (t *PGXTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	endPGXSpan(spanOf(ctx), pgconn.CommandTag{}, data.Err, false)
}

// TraceConnectStart implements [pgx.ConnectTracer]: a connection opened inside a request (the pool had
// none idle) shows in its trace.
func (t *PGXTracer) TraceConnectStart(ctx context.Context, data pgx.TraceConnectStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx = t.start(ctx, nil, "connect", "connect", "")
	if span := spanOf(ctx); span != nil && span.IsRecording() && data.ConnConfig != nil {
		span.SetAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.name", data.ConnConfig.Database),
			attribute.String("server.address", data.ConnConfig.Host), attribute.Int("server.port", int(data.ConnConfig.Port)))
	}
	return ctx
}

// TraceConnectEnd implements [pgx.ConnectTracer].
func (t *PGXTracer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	endPGXSpan(spanOf(ctx), pgconn.CommandTag{}, data.Err, false)
}

// DescribeSQL names a statement for its span: sqlc's query name and the statement's text when sql opens
// with sqlc's "-- name: X :kind" comment, else its first keyword, upper-cased, and no text.
func DescribeSQL(sql string) (name, statement string) {
	s := strings.TrimLeft(sql, " \t\r\n")
	if rest, ok := strings.CutPrefix(s, "-- name: "); ok {
		if i := strings.IndexAny(rest, " \t\r\n"); i > 0 {
			rest = rest[:i]
		}
		if rest != "" && len(rest) <= 128 {
			return rest, sql
		}
	}
	// Skip comments before the first keyword.
	for strings.HasPrefix(s, "--") {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return "SQL", ""
		}
		s = strings.TrimLeft(s[i+1:], " \t\r\n")
	}
	end := 0
	for end < len(s) && end < 32 && isWordByte(s[end]) {
		end++
	}
	if end == 0 {
		return "SQL", ""
	}
	return strings.ToUpper(s[:end]), ""
}

func isWordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_'
}
