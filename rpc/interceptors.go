package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the RPC server's Prometheus collectors.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewMetrics registers the RPC collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rpc_server_requests_total",
			Help: "RPCs handled, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rpc_server_duration_seconds",
			Help:    "Time to handle an RPC, by procedure.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"procedure"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rpc_server_in_flight",
			Help: "RPCs being handled now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// observe is the outermost interceptor: it times every RPC, counts it by
// code and logs one line per request. Tax ids and keys never reach the log:
// only the procedure, the participant, the code and the duration do.
func observe(m *Metrics, logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			m.inflight.Inc()
			who := &requestCaller{}
			res, err := next(context.WithValue(ctx, requestCallerKey{}, who), req)
			m.inflight.Dec()
			elapsed := time.Since(start)
			procedure := req.Spec().Procedure
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			m.requests.WithLabelValues(procedure, code).Inc()
			m.duration.WithLabelValues(procedure).Observe(elapsed.Seconds())
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

// recoverPanic turns a handler panic into an Internal error for the client
// and an error log with the panic value for the operator.
func recoverPanic(logger *slog.Logger) func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	return func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
		logger.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", p)
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
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
