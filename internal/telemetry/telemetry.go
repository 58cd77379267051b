// Package telemetry sets up the process's OpenTelemetry tracing from the standard OTEL_* environment
// variables, and traces PostgreSQL queries (a pgx tracer, see [NewPGXTracer]).
//
// [Setup] reads:
//
//	OTEL_SDK_DISABLED                     true: no tracing at all (a no-op provider)
//	OTEL_EXPORTER_OTLP_ENDPOINT           OTLP collector, e.g. http://127.0.0.1:4318 (http/protobuf) or
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT    http://127.0.0.1:4317 (grpc); unset: no exporter, no-op provider
//	OTEL_EXPORTER_OTLP_PROTOCOL           http/protobuf (default) or grpc; also ..._TRACES_PROTOCOL
//	OTEL_TRACES_EXPORTER                  otlp (default) or none
//	OTEL_SERVICE_NAME                     service.name (default: the name main passes, core-dict or dictsim)
//	OTEL_RESOURCE_ATTRIBUTES              more resource attributes, key=value,...
//	OTEL_TRACES_SAMPLER, _ARG             the SDK's samplers (default parentbased_always_on)
//	OTEL_BSP_*, OTEL_EXPORTER_OTLP_*      the batch processor's and exporters' own settings (headers,
//	                                      timeout, compression, certificates), read by the SDK
//
// Without an endpoint the provider is a no-op: spans cost next to nothing and a caller's traceparent
// still passes through to the outbox and the bus.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Shutdown flushes the spans not yet exported and stops the exporter; ctx bounds the flush.
type Shutdown func(ctx context.Context) error

// Setup builds the tracer provider the OTEL_* variables describe (see the package documentation), makes
// it otel's global provider, with W3C Trace Context and Baggage as the global propagator, and sends
// otel's internal errors (an export that failed) to logger. service is the default service.name.
//
// A bad value is an error naming the variable. The exporter does not connect here: an unreachable
// collector only costs failed exports, logged.
func Setup(ctx context.Context, service string, logger *slog.Logger) (trace.TracerProvider, Shutdown, error) {
	if logger == nil {
		logger = slog.Default()
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry: spans not exported", "err", err)
	}))
	noShutdown := func(context.Context) error { return nil }

	c, err := readEnv(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	if c.disabled || c.endpoint == "" || c.exporter == "none" {
		tp := noop.NewTracerProvider()
		otel.SetTracerProvider(tp)
		return tp, noShutdown, nil
	}
	var exp sdktrace.SpanExporter
	switch c.protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s=%q: %w", c.endpointVar, c.endpoint, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil {
		// A partial resource is still usable; only a malformed OTEL_RESOURCE_ATTRIBUTES gets here.
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: want key=value pairs separated by commas: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	name, _ := res.Set().Value("service.name")
	logger.Info("tracing: exporting spans over OTLP", "endpoint", redactURL(c.endpoint), "protocol", c.protocol,
		"service", name.Emit())
	return tp, tp.Shutdown, nil
}

// envConfig is what Setup decides from the environment.
type envConfig struct {
	disabled              bool
	exporter              string
	endpoint, endpointVar string
	protocol              string
}

// samplers are the values of OTEL_TRACES_SAMPLER the SDK knows; *ratio ones take OTEL_TRACES_SAMPLER_ARG.
var samplers = map[string]bool{
	"always_on": false, "always_off": false, "traceidratio": true,
	"parentbased_always_on": false, "parentbased_always_off": false, "parentbased_traceidratio": true,
}

// readEnv checks the OTEL_* variables Setup and the SDK act on; the SDK itself ignores a bad value with
// a log line, which would hide a mistyped sampler or protocol.
func readEnv(getenv func(string) string) (envConfig, error) {
	var c envConfig
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("OTEL_SDK_DISABLED=%q: want true or false", v)
		}
		c.disabled = b
	}
	c.exporter = strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch c.exporter {
	case "", "otlp":
		c.exporter = "otlp"
	case "none":
	default:
		return c, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp or none", c.exporter)
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return c, fmt.Errorf("%s=%q: want an http:// or https:// URL, e.g. http://127.0.0.1:4318", name, redactURL(v))
			}
			c.endpoint, c.endpointVar = v, name
			break
		}
	}
	c.protocol = "http/protobuf"
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.ToLower(strings.TrimSpace(getenv(name))); v != "" {
			if v != "grpc" && v != "http/protobuf" {
				return c, fmt.Errorf("%s=%q: want http/protobuf or grpc", name, v)
			}
			c.protocol = v
			break
		}
	}
	if v := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))); v != "" {
		ratio, ok := samplers[v]
		if !ok {
			return c, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", v)
		}
		if a := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); ratio && a != "" {
			if f, err := strconv.ParseFloat(a, 64); err != nil || f < 0 || f > 1 {
				return c, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", a)
			}
		}
	}
	return c, nil
}

// redactURL drops the user information of an endpoint URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparsable URL)"
		}
		return s
	}
	u.User = nil
	return u.String()
}
