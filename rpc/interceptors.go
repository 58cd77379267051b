package rpc

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// observe is the outermost interceptor: it times every RPC, counts it by
// code and logs one line per request. Tax ids and keys never reach the log:
// only the procedure, the participant, the code and the duration do.
func observe(m *Metrics, logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			procedure := req.Spec().Procedure
			m.begin()
			code := connect.CodeInternal.String() // unless next returns
			defer func() { m.done(procedure, code, time.Since(start)) }()
			who := &requestCaller{}
			res, err := next(context.WithValue(ctx, requestCallerKey{}, who), req)
			elapsed := time.Since(start)
			code = "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			attrs := []any{"procedure", procedure, "code", code, "duration_ms", float64(elapsed.Microseconds()) / 1000,
				"protocol", req.Peer().Protocol}
			if who.participant != "" {
				attrs = append(attrs, "participant", who.participant, "sub", who.subject)
			}
			level := slog.LevelInfo
			if code == connect.CodeInternal.String() || code == connect.CodeUnknown.String() {
				level = slog.LevelError
			}
			logger.Log(ctx, level, "rpc", attrs...)
			return res, err
		}
	}
}

// requestCaller carries the authenticated caller back out to [observe],
// which runs before authentication and so cannot read it from its own
// context. The handler fills it when it learns who called.
type requestCaller struct{ participant, subject string }

type requestCallerKey struct{}

func noteCaller(ctx context.Context, p Principal) {
	if who, ok := ctx.Value(requestCallerKey{}).(*requestCaller); ok {
		who.participant, who.subject = p.Participant, p.Subject
	}
}
