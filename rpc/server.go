package rpc

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// DefaultMaxRequestBytes bounds one request message (1 MiB): the largest
// legitimate request, CheckKeys with 200 keys, is a few KiB.
const DefaultMaxRequestBytes = 1 << 20

// ServerConfig is what [NewMux] serves.
type ServerConfig struct {
	Service         *dict.Service
	Auth            *Authenticator
	Metrics         *Metrics
	Logger          *slog.Logger
	MaxRequestBytes int
	// Extra interceptors run after authentication, before the handler
	// (limiters).
	Interceptors []connect.Interceptor
	// TracerProvider starts one server span per RPC, a child of the caller's
	// traceparent when it sends one (default: otel.GetTracerProvider(), looked
	// up when NewMux runs).
	TracerProvider trace.TracerProvider
}

// NewMux returns the one mux that serves CoreDictService (gRPC, gRPC-Web and
// Connect), grpc.health.v1.Health and server reflection v1 and v1alpha.
// Health and reflection need no token; every CoreDictService RPC does.
func NewMux(cfg ServerConfig) *http.ServeMux {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	interceptors := []connect.Interceptor{newServerTracing(cfg.TracerProvider), observe(cfg.Metrics, cfg.Logger), cfg.Auth.Interceptor()}
	interceptors = append(interceptors, cfg.Interceptors...)
	mux := http.NewServeMux()
	path, h := dictv1connect.NewCoreDictServiceHandler(
		NewHandler(cfg.Service, cfg.Logger),
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		connect.WithRecover(recoverPanic(cfg.Logger)),
	)
	mux.Handle(path, bounded(h, int64(cfg.MaxRequestBytes)))
	mux.Handle(grpchealth.NewHandler(healthChecker{svc: cfg.Service}))
	reflector := grpcreflect.NewStaticReflector(dictv1connect.CoreDictServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return mux
}

// bounded caps the bytes read from a request body, so that a body without
// a declared length (or a compressed one) cannot grow past the limit even
// before Connect decodes it. The slack covers envelopes and headers of the
// streaming protocols.
func bounded(h http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit+64<<10)
		h.ServeHTTP(w, r)
	})
}

// healthChecker reports SERVING while the database answers.
type healthChecker struct{ svc *dict.Service }

func (c healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", dictv1connect.CoreDictServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.svc.Ping(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}
