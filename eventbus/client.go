package eventbus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Client is a connection to the Pulsar cluster plus what every producer and consumer built from it shares:
// the configuration, the logger, the metrics and the trace propagation. It is safe for concurrent use.
type Client struct {
	pc         pulsar.Client
	cfg        Config
	log        *slog.Logger
	metrics    *Metrics
	propagator propagation.TextMapPropagator
	tracer     trace.Tracer
}

// ClientOption configures [NewClient].
type ClientOption func(*clientOptions)

type clientOptions struct {
	logger            *slog.Logger
	registerer        prometheus.Registerer
	libRegisterer     prometheus.Registerer
	tracerProvider    trace.TracerProvider
	propagator        propagation.TextMapPropagator
	connectionTimeout time.Duration
	operationTimeout  time.Duration
}

// WithLogger sends the client's logs, and pulsar-client-go's, to l (default [slog.Default]).
func WithLogger(l *slog.Logger) ClientOption { return func(o *clientOptions) { o.logger = l } }

// WithRegisterer registers the seed's pulsar_* metrics ([Metrics]) and pulsar-client-go's own
// pulsar_client_* metrics in r (default [prometheus.DefaultRegisterer]).
func WithRegisterer(r prometheus.Registerer) ClientOption {
	return func(o *clientOptions) { o.registerer = r }
}

// WithLibraryRegisterer registers pulsar-client-go's own pulsar_client_* metrics in r instead of the
// [WithRegisterer] one. Their names do not follow Prometheus' conventions (counters without _total,
// which `promtool check metrics` refuses), so core-dict serves them apart from its own.
func WithLibraryRegisterer(r prometheus.Registerer) ClientOption {
	return func(o *clientOptions) { o.libRegisterer = r }
}

// WithTracerProvider makes consumers start their spans with tp (default: otel's global provider, looked up
// when the client is built).
func WithTracerProvider(tp trace.TracerProvider) ClientOption {
	return func(o *clientOptions) { o.tracerProvider = tp }
}

// WithPropagator sets how trace context is written to and read from message properties. The default is
// W3C Trace Context plus Baggage, not otel's global propagator: the outbox relay writes the traceparent
// property itself, so the wire format of the bus is fixed whatever the process configured.
func WithPropagator(p propagation.TextMapPropagator) ClientOption {
	return func(o *clientOptions) { o.propagator = p }
}

// WithTimeouts bounds connecting to a broker (default 10s) and each lookup, producer or consumer creation
// (default 30s).
func WithTimeouts(connection, operation time.Duration) ClientOption {
	return func(o *clientOptions) {
		o.connectionTimeout = connection
		o.operationTimeout = operation
	}
}

// NewClient builds a Pulsar client from cfg. It does not wait for the broker: the first producer or
// consumer does, within the operation timeout.
func NewClient(cfg Config, opts ...ClientOption) (*Client, error) {
	o := clientOptions{connectionTimeout: 10 * time.Second, operationTimeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.registerer == nil {
		o.registerer = prometheus.DefaultRegisterer
	}
	if o.libRegisterer == nil {
		o.libRegisterer = o.registerer
	}
	if o.tracerProvider == nil {
		o.tracerProvider = otel.GetTracerProvider()
	}
	if o.propagator == nil {
		o.propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	metrics, err := NewMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	log := o.logger.With("component", "eventbus")
	pc, err := pulsar.NewClient(pulsar.ClientOptions{
		URL:               cfg.URL,
		ConnectionTimeout: o.connectionTimeout,
		OperationTimeout:  o.operationTimeout,
		Logger:            newSlogLogger(log.With("lib", "pulsar-client-go")),
		MetricsRegisterer: o.libRegisterer,
	})
	if err != nil {
		return nil, fmt.Errorf("eventbus: pulsar client for %s: %w", cfg.URL, err)
	}
	return &Client{
		pc:         pc,
		cfg:        cfg,
		log:        log,
		metrics:    metrics,
		propagator: o.propagator,
		tracer:     o.tracerProvider.Tracer(instrumentationName),
	}, nil
}

// Pulsar returns the underlying pulsar-client-go client, for what this package does not wrap (readers,
// the outbox relay's own producers).
func (c *Client) Pulsar() pulsar.Client { return c.pc }

// Config returns the configuration the client was built from.
func (c *Client) Config() Config { return c.cfg }

// Metrics returns the pulsar_* metrics the client's producers and consumers record.
func (c *Client) Metrics() *Metrics { return c.metrics }

// Close closes the connections. Close producers and consumers first.
func (c *Client) Close() { c.pc.Close() }

// slogLogger is pulsar-client-go's log.Logger over an *slog.Logger, keeping its fields as attributes.
type slogLogger struct{ l *slog.Logger }

func newSlogLogger(l *slog.Logger) pulsarlog.Logger { return slogLogger{l} }

func attrs(fields pulsarlog.Fields) []any {
	kv := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		kv = append(kv, k, v)
	}
	return kv
}

func (s slogLogger) SubLogger(fields pulsarlog.Fields) pulsarlog.Logger {
	return slogLogger{s.l.With(attrs(fields)...)}
}
func (s slogLogger) WithFields(fields pulsarlog.Fields) pulsarlog.Entry {
	return slogLogger{s.l.With(attrs(fields)...)}
}
func (s slogLogger) WithField(name string, value any) pulsarlog.Entry {
	return slogLogger{s.l.With(name, value)}
}
func (s slogLogger) WithError(err error) pulsarlog.Entry { return slogLogger{s.l.With("error", err)} }

func (s slogLogger) log(level slog.Level, msg func() string) {
	ctx := context.Background()
	if s.l.Enabled(ctx, level) {
		s.l.Log(ctx, level, msg())
	}
}

func (s slogLogger) Debug(args ...any) {
	s.log(slog.LevelDebug, func() string { return fmt.Sprint(args...) })
}
func (s slogLogger) Info(args ...any) {
	s.log(slog.LevelInfo, func() string { return fmt.Sprint(args...) })
}
func (s slogLogger) Warn(args ...any) {
	s.log(slog.LevelWarn, func() string { return fmt.Sprint(args...) })
}
func (s slogLogger) Error(args ...any) {
	s.log(slog.LevelError, func() string { return fmt.Sprint(args...) })
}
func (s slogLogger) Debugf(f string, args ...any) {
	s.log(slog.LevelDebug, func() string { return fmt.Sprintf(f, args...) })
}
func (s slogLogger) Infof(f string, args ...any) {
	s.log(slog.LevelInfo, func() string { return fmt.Sprintf(f, args...) })
}
func (s slogLogger) Warnf(f string, args ...any) {
	s.log(slog.LevelWarn, func() string { return fmt.Sprintf(f, args...) })
}
func (s slogLogger) Errorf(f string, args ...any) {
	s.log(slog.LevelError, func() string { return fmt.Sprintf(f, args...) })
}
