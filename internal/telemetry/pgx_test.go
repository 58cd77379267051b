package telemetry_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/internal/telemetry"
	"github.com/lbpay-lab/core-dict/internal/testdb"
)

func TestDescribeSQL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ sql, name, statement string }{
		{"-- name: GetEntry :one\nSELECT * FROM entries WHERE key = $1", "GetEntry", "-- name: GetEntry :one\nSELECT * FROM entries WHERE key = $1"},
		{"\n  -- name: InsertOutbox :exec\nINSERT INTO outbox VALUES ($1)", "InsertOutbox", "\n  -- name: InsertOutbox :exec\nINSERT INTO outbox VALUES ($1)"},
		{"begin", "BEGIN", ""},
		{"SELECT set_config('app.participants', '12345678', true)", "SELECT", ""},
		{"-- a comment\nupdate x set y = 'literal'", "UPDATE", ""},
		{"-- only a comment", "SQL", ""},
		{"(SELECT 1)", "SQL", ""},
		{"", "SQL", ""},
	} {
		name, statement := telemetry.DescribeSQL(tc.sql)
		if name != tc.name || statement != tc.statement {
			t.Errorf("DescribeSQL(%q) = %q, %q; want %q, %q", tc.sql, name, statement, tc.name, tc.statement)
		}
	}
}

// TestPGXTracerSpans runs queries through a pool with the tracer: inside a trace each query, batch and
// new connection is a client span, child of the caller's, named for the sqlc query or the statement's
// verb; outside a trace there are none; no argument value, literal or server error text reaches a span.
func TestPGXTracerSpans(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := testdb.CreateMigrated(ctx, "telemetry", func(context.Context, string, io.Writer) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	pc, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.Tracer = telemetry.NewPGXTracer(tp)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	const secret = "+5561987654321" // a PIX key, as an argument and as a literal
	var s string
	// Outside any trace (the pool's first connection too): no span.
	if err := pool.QueryRow(ctx, "-- name: Echo :one\nSELECT $1::text", secret).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans for a query outside any trace, want none", n)
	}

	pctx, parent := tp.Tracer("test").Start(ctx, "parent")
	if err := pool.QueryRow(pctx, "-- name: Echo :one\nSELECT $1::text", secret).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(pctx, "SELECT '"+secret+"'::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	// The server's message quotes the value: invalid input syntax for type uuid: "+5561987654321".
	if err := pool.QueryRow(pctx, "-- name: BadUUID :one\nSELECT $1::text::uuid", secret).Scan(&s); err == nil {
		t.Fatal("a PIX key cast to uuid: no error")
	}
	b := &pgx.Batch{}
	b.Queue("-- name: Echo :one\nSELECT $1::text", secret)
	b.Queue("SELECT 2")
	if err := pool.SendBatch(pctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	// A second connection, opened inside the trace.
	conn, err := pool.Acquire(pctx)
	if err != nil {
		t.Fatal(err)
	}
	conn2, err := pool.Acquire(pctx)
	if err != nil {
		t.Fatal(err)
	}
	conn.Release()
	conn2.Release()
	parent.End()

	type got struct {
		Name, Op, Statement, Status, Code string
		Events                            int
	}
	var spans []got
	for _, sp := range rec.Ended() {
		if sp.Name() == "parent" {
			continue
		}
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() || sp.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %q: parent %v kind %v, want a client child of the caller's span", sp.Name(), sp.Parent().SpanID(), sp.SpanKind())
		}
		g := got{Name: sp.Name(), Events: len(sp.Events())}
		if sp.Status().Code == codes.Error {
			g.Status = sp.Status().Description
		}
		check := func(where, v string) {
			if strings.Contains(v, secret) {
				t.Errorf("span %q %s holds the argument or literal: %q", sp.Name(), where, v)
			}
		}
		check("status", sp.Status().Description)
		system := ""
		for _, kv := range sp.Attributes() {
			v := kv.Value.Emit()
			check(string(kv.Key), v)
			switch kv.Key {
			case "db.system":
				system = v
			case "db.operation":
				g.Op = v
			case "db.statement":
				g.Statement = v
			case "db.response.status_code":
				g.Code = v
			}
		}
		for _, e := range sp.Events() {
			for _, kv := range e.Attributes {
				check("event "+string(kv.Key), kv.Value.Emit())
			}
		}
		if system != "postgresql" {
			t.Errorf("span %q: db.system %q, want postgresql", sp.Name(), system)
		}
		spans = append(spans, g)
	}
	want := []got{
		{Name: "Echo", Op: "Echo", Statement: "-- name: Echo :one\nSELECT $1::text"},
		{Name: "SELECT", Op: "SELECT"},
		{Name: "BadUUID", Op: "BadUUID", Statement: "-- name: BadUUID :one\nSELECT $1::text::uuid", Status: "SQLSTATE 22P02", Code: "22P02"},
		{Name: "batch", Op: "batch", Events: 2},
		{Name: "connect", Op: "connect"},
	}
	if diff := cmp.Diff(want, spans); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
}
