package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"

	"connectrpc.com/connect"
)

// internalMessage is all a client learns of a server fault.
const internalMessage = "internal error"

// errInternal is the error a recovered panic answers with.
func errInternal() *connect.Error {
	return connect.NewError(connect.CodeInternal, errors.New(internalMessage))
}

// recoveredPanics counts the panics recovered by this process's servers.
var recoveredPanics atomic.Int64

// RecoveredPanics reports how many panics the servers of this process have
// recovered (each answered INTERNAL and logged with its stack): zero in a
// healthy process, and what the hostile-input tests check.
func RecoveredPanics() int64 { return recoveredPanics.Load() }

// panicLogger logs a recovered panic with its stack and counts it. The
// logger masks keys and tax ids: a panic value may hold request data.
type panicLogger struct {
	logger *slog.Logger
	m      *Metrics // rpc_server_panics_total; may be nil
}

func (p panicLogger) log(ctx context.Context, where string, v any) {
	recoveredPanics.Add(1)
	if p.m != nil && p.m.panics != nil {
		p.m.panics.Inc()
	}
	p.logger.ErrorContext(ctx, "panic recovered", "where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// recoverInterceptor turns a panic in what runs inside it (authentication,
// the limiters, the handler) into INTERNAL with a generic message, and logs
// the panic with its stack. It runs inside tracing and [observe], so that a
// panic is still one traced, counted and logged RPC with code internal.
func recoverInterceptor(logger *slog.Logger, m *Metrics) connect.Interceptor {
	return recoverer{panicLogger{logger, m}}
}

type recoverer struct{ p panicLogger }

func (r recoverer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (res connect.AnyResponse, err error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // net/http compares with ==
					panic(v)
				}
				r.p.log(ctx, req.Spec().Procedure, v)
				res, err = nil, errInternal()
			}
		}()
		return next(ctx, req)
	}
}

func (recoverer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (r recoverer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // net/http compares with ==
					panic(v)
				}
				r.p.log(ctx, conn.Spec().Procedure, v)
				err = errInternal()
			}
		}()
		return next(ctx, conn)
	}
}

// recoverPanic is the handler-level recovery (connect.WithRecover), the
// innermost net: the same log, the same answer.
func recoverPanic(logger *slog.Logger, m *Metrics) func(context.Context, connect.Spec, http.Header, any) error {
	p := panicLogger{logger, m}
	return func(ctx context.Context, spec connect.Spec, _ http.Header, v any) error {
		p.log(ctx, spec.Procedure, v)
		return errInternal()
	}
}

// recoverHTTP is the outermost net, for what runs outside the interceptors:
// decoding, the outer interceptors themselves, health and reflection. When
// nothing has been written yet it answers INTERNAL in the request's protocol
// (gRPC and gRPC-Web: a trailers-only response; Connect: the JSON error
// body); otherwise it aborts the response, as net/http would, without the
// stack reaching the client.
func recoverHTTP(logger *slog.Logger, m *Metrics, h http.Handler) http.Handler {
	p := panicLogger{logger, m}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &watchedWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // net/http compares with ==
				panic(v)
			}
			p.log(r.Context(), r.URL.Path, v)
			if rw.wrote {
				panic(http.ErrAbortHandler)
			}
			writeInternal(w, r)
		}()
		h.ServeHTTP(rw, r)
	})
}

// writeInternal answers an internal error in the protocol of r.
func writeInternal(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	hdr := w.Header()
	switch {
	case strings.HasPrefix(ct, "application/grpc"): // gRPC and gRPC-Web
		hdr.Set("Content-Type", ct)
		hdr.Set("Grpc-Status", "13")
		hdr.Set("Grpc-Message", "internal%20error")
		w.WriteHeader(http.StatusOK)
	default: // Connect (unary; a streaming Connect client reads the same)
		hdr.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"code":"internal","message":"` + internalMessage + `"}`))
	}
}

// watchedWriter notes whether the response has started. It keeps the
// optional interfaces Connect and net/http use.
type watchedWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *watchedWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *watchedWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *watchedWriter) Flush() {
	w.wrote = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
