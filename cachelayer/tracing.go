package cachelayer

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracingInstrumentation names the tracer of the Redis spans.
const tracingInstrumentation = "github.com/lbpay-lab/core-dict/cachelayer"

// WithTracerProvider starts the Redis command spans with tp (default: otel's global provider, looked up
// when the client is built; its spans follow a provider set later with otel.SetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *clientSettings) { s.tp = tp }
}

// tracedClient is a rueidis.Client that starts a client span for every command (Do, DoCache) and
// pipeline (DoMulti, DoMultiCache) issued inside a trace, including those of Dedicated connections
// (WATCH/MULTI/EXEC). A command whose context carries no span makes none, so background loops (the
// reconnect probe, the write-behind flush ticks) do not flood the collector with one-span traces.
//
// A span is named for the command (GET, EVALSHA, ...) or "pipeline"; it carries db.system=redis and
// db.operation, never a key or an argument: keys hold PIX keys and payers' tax ids. A Redis error is
// recorded by its prefix only (ERR, NOSCRIPT, WRONGTYPE, ...), as a script's error text may quote data.
type tracedClient struct {
	rueidis.Client
	tracer trace.Tracer
}

// traceRedis wraps c so that its commands start spans with tracer.
func traceRedis(c rueidis.Client, tp trace.TracerProvider) rueidis.Client {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &tracedClient{Client: c, tracer: tp.Tracer(tracingInstrumentation)}
}

func redisCommandName(cmds []string) string {
	if len(cmds) == 0 {
		return "UNKNOWN"
	}
	return strings.ToUpper(cmds[0])
}

// startRedis starts a span named name when ctx is inside a trace; the returned span is nil otherwise.
func startRedis(ctx context.Context, tracer trace.Tracer, name string, attrs func() []attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil
	}
	ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("db.system", "redis"))
		span.SetAttributes(attrs()...)
	}
	return ctx, span
}

func endRedis(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil && !rueidis.IsRedisNil(err) && span.IsRecording() {
		kind := redisErrorKind(err)
		span.SetAttributes(attribute.String("error.type", kind))
		span.SetStatus(codes.Error, kind)
	}
	span.End()
}

// redisErrorKind describes err without quoting it: a Redis error's prefix, or the kind of failure.
func redisErrorKind(err error) string {
	if re, ok := rueidis.IsRedisErr(err); ok {
		prefix, _, _ := strings.Cut(re.Error(), " ")
		if len(prefix) > 32 {
			prefix = prefix[:32]
		}
		return prefix
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.Is(err, rueidis.ErrClosing):
		return "closed"
	default:
		return "network"
	}
}

func pipelineAttrs(names []string) func() []attribute.KeyValue {
	return func() []attribute.KeyValue {
		return []attribute.KeyValue{
			attribute.String("db.operation", "pipeline"),
			attribute.Int("db.operation.batch.size", len(names)),
			attribute.StringSlice("db.redis.commands", names),
		}
	}
}

// distinctNames lists the command names of a pipeline, each once, in order of first use (at most 16).
func distinctNames(n int, name func(i int) string) []string {
	var out []string
outer:
	for i := 0; i < n && len(out) < 16; i++ {
		s := name(i)
		for _, o := range out {
			if o == s {
				continue outer
			}
		}
		out = append(out, s)
	}
	return out
}

func firstError(rs []rueidis.RedisResult) error {
	for _, r := range rs {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
	}
	return nil
}

func (c *tracedClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return traceDo(ctx, c.tracer, c.Client, cmd)
}

func (c *tracedClient) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	return traceDoMulti(ctx, c.tracer, c.Client, multi)
}

func (c *tracedClient) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return c.Client.DoCache(ctx, cmd, ttl)
	}
	name := redisCommandName(cmd.Commands())
	ctx, span := startRedis(ctx, c.tracer, name, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("db.operation", name)}
	})
	r := c.Client.DoCache(ctx, cmd, ttl)
	if span != nil && span.IsRecording() {
		span.SetAttributes(attribute.Bool("db.redis.client_cache_hit", r.IsCacheHit()))
	}
	endRedis(span, r.Error())
	return r
}

func (c *tracedClient) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return c.Client.DoMultiCache(ctx, multi...)
	}
	names := distinctNames(len(multi), func(i int) string { return redisCommandName(multi[i].Cmd.Commands()) })
	ctx, span := startRedis(ctx, c.tracer, "pipeline", pipelineAttrs(names))
	rs := c.Client.DoMultiCache(ctx, multi...)
	endRedis(span, firstError(rs))
	return rs
}

func (c *tracedClient) Dedicated(fn func(rueidis.DedicatedClient) error) error {
	return c.Client.Dedicated(func(dc rueidis.DedicatedClient) error {
		return fn(&tracedDedicated{DedicatedClient: dc, tracer: c.tracer})
	})
}

func (c *tracedClient) Dedicate() (rueidis.DedicatedClient, func()) {
	dc, cancel := c.Client.Dedicate()
	return &tracedDedicated{DedicatedClient: dc, tracer: c.tracer}, cancel
}

// tracedDedicated is a DedicatedClient whose commands start spans, like [tracedClient]'s.
type tracedDedicated struct {
	rueidis.DedicatedClient
	tracer trace.Tracer
}

func (d *tracedDedicated) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return traceDo(ctx, d.tracer, d.DedicatedClient, cmd)
}

func (d *tracedDedicated) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	return traceDoMulti(ctx, d.tracer, d.DedicatedClient, multi)
}

func traceDo(ctx context.Context, tracer trace.Tracer, c rueidis.CommandClient, cmd rueidis.Completed) rueidis.RedisResult {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return c.Do(ctx, cmd)
	}
	// The command's words are recycled once it is sent: read its name first.
	name := redisCommandName(cmd.Commands())
	ctx, span := startRedis(ctx, tracer, name, func() []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("db.operation", name)}
	})
	r := c.Do(ctx, cmd)
	endRedis(span, r.Error())
	return r
}

func traceDoMulti(ctx context.Context, tracer trace.Tracer, c rueidis.CommandClient, multi []rueidis.Completed) []rueidis.RedisResult {
	if !trace.SpanContextFromContext(ctx).IsValid() || len(multi) == 0 {
		return c.DoMulti(ctx, multi...)
	}
	names := distinctNames(len(multi), func(i int) string { return redisCommandName(multi[i].Commands()) })
	name := "pipeline"
	if names[0] == "MULTI" {
		name = "MULTI"
	}
	ctx, span := startRedis(ctx, tracer, name, pipelineAttrs(names))
	rs := c.DoMulti(ctx, multi...)
	endRedis(span, firstError(rs))
	return rs
}
