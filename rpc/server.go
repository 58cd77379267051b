package rpc

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel/trace"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/internal/logmask"
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
	// IPLimiter, when set, limits CoreDictService requests per client
	// address BEFORE authentication (a flood of forged tokens is refused
	// unverified); AccountLimiter, when set, per authenticated account
	// (participant and subject) after it. Refusals are RESOURCE_EXHAUSTED
	// with reason RateLimited and a RetryInfo.
	IPLimiter      KeyLimiter
	AccountLimiter KeyLimiter
	// Extra interceptors run after authentication and the account limit,
	// before the handler.
	Interceptors []connect.Interceptor
	// TracerProvider starts one server span per RPC, a child of the caller's
	// traceparent when it sends one (default: otel.GetTracerProvider(), looked
	// up when NewMux runs).
	TracerProvider trace.TracerProvider
	// Console, when set, serves every path no RPC handler takes: the
	// browser console (package web), at /. It must answer 404 to anything
	// but GET and HEAD, as the mux would, so that a call of an unknown
	// procedure stays Unimplemented.
	Console http.Handler
	// CORSAllowedOrigins are the origins (scheme://host[:port], or "*")
	// whose pages may call CoreDictService from a browser with gRPC-Web or
	// Connect (CORS_ALLOWED_ORIGINS); empty: no cross-origin calls.
	CORSAllowedOrigins []string
}

// compressMinBytes is the smallest response the server compresses.
const compressMinBytes = 1 << 10

// NewMux returns the one mux that serves CoreDictService (gRPC, gRPC-Web and
// Connect), grpc.health.v1.Health and server reflection v1 and v1alpha.
// Health and reflection need no token; every CoreDictService RPC does.
func NewMux(cfg ServerConfig) *http.ServeMux {
	// Keys and tax ids never reach the log, whatever logger we are given.
	cfg.Logger = logmask.Logger(cfg.Logger)
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	interceptors := []connect.Interceptor{newServerTracing(cfg.TracerProvider), observe(cfg.Metrics, cfg.Logger),
		recoverInterceptor(cfg.Logger, cfg.Metrics)}
	if cfg.IPLimiter != nil {
		interceptors = append(interceptors, ipRateLimit(cfg.IPLimiter))
	}
	interceptors = append(interceptors, cfg.Auth.Interceptor())
	if cfg.AccountLimiter != nil {
		interceptors = append(interceptors, accountRateLimit(cfg.AccountLimiter))
	}
	interceptors = append(interceptors, cfg.Interceptors...)
	mux := http.NewServeMux()
	path, h := dictv1connect.NewCoreDictServiceHandler(
		NewHandler(cfg.Service, cfg.Logger),
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		connect.WithRecover(recoverPanic(cfg.Logger, cfg.Metrics)),
		// A response is compressed (when the client accepts it) only from
		// 1 KiB: most answers are a few hundred bytes, which gzip barely
		// shrinks, and setting up a compressor cost a lookup more CPU than
		// the lookup itself (BenchmarkLookup's profile).
		connect.WithCompressMinBytes(compressMinBytes),
		codecs(),
	)
	// Health and reflection: the same recovery and codecs.
	hardened := connect.WithHandlerOptions(connect.WithRecover(recoverPanic(cfg.Logger, cfg.Metrics)), codecs())
	// recoverHTTP inside bounded: http.MaxBytesReader must get net/http's
	// own ResponseWriter, or the server is not told to close a connection
	// whose oversized body it did not read, and reads the rest of that body
	// as the next request.
	mux.Handle(path, withCORS(cfg.CORSAllowedOrigins, bounded(recoverHTTP(cfg.Logger, cfg.Metrics, h), int64(cfg.MaxRequestBytes))))
	mux.Handle(grpchealth.NewHandler(healthChecker{svc: cfg.Service}, hardened))
	reflector := grpcreflect.NewStaticReflector(dictv1connect.CoreDictServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, hardened))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, hardened))
	if cfg.Console != nil {
		mux.Handle("/", cfg.Console)
	}
	return mux
}

// withCORS answers CORS preflights and adds the CORS headers for the
// origins allowed, with the methods and headers gRPC-Web and Connect need
// (connectrpc.com/cors). Without origins, h is returned as it is: a browser
// on another origin cannot call it.
func withCORS(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization", "Traceparent", "Tracestate"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200,
	}).Handler(h)
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
