package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/lbpay-lab/core-dict/internal/telemetry"
)

// setupTracing makes the tracer provider of the OTEL_* variables otel's global one (every component
// starts its spans with the global provider) and returns what flushes it at exit. service is the
// default OTEL_SERVICE_NAME.
func setupTracing(ctx context.Context, service string, logger *slog.Logger) (func(), error) {
	_, shutdown, err := telemetry.Setup(ctx, service, logger)
	if err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			logger.Warn("tracing: spans not flushed at exit", "err", err)
		}
	}, nil
}
