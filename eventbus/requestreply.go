package eventbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
)

// ErrNoReply is returned by [Requester.Request] when no reply arrived before the deadline.
var ErrNoReply = errors.New("eventbus: no reply before the deadline")

// Correlate extracts the correlation id of a reply (from its payload or properties); an error drops the
// reply.
type Correlate func(payload []byte, properties map[string]string) (string, error)

// Requester sends requests on one topic and waits for their replies on a topic of its own instance: one
// producer, one exclusive consumer on the reply topic, and a map of correlation id to waiter. Replies
// nobody waits for any more (late, or for a request of an earlier process) are acknowledged and dropped.
// It is safe for concurrent use; [Requester.Run] must run for replies to be received.
type Requester struct {
	producer  *Producer
	consumer  pulsar.Consumer
	replyTo   string
	correlate Correlate

	mu      sync.Mutex
	waiters map[string]chan []byte

	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	inFlight prometheus.Gauge
}

// RequesterOption configures [Client.NewRequester].
type RequesterOption func(*requesterOptions)

type requesterOptions struct {
	registerer   prometheus.Registerer
	subscription string
}

// WithRequesterRegisterer registers the requester's metrics (request_reply_requests_total by outcome:
// replied, timeout, error, late; request_reply_seconds; request_reply_in_flight) in r.
func WithRequesterRegisterer(r prometheus.Registerer) RequesterOption {
	return func(o *requesterOptions) { o.registerer = r }
}

// WithReplySubscription names the exclusive subscription on the reply topic (default "requester").
func WithReplySubscription(name string) RequesterOption {
	return func(o *requesterOptions) { o.subscription = name }
}

// NewRequester creates a requester that publishes on requestTopic and receives on replyTopic, a topic
// only this instance reads (exclusive subscription: a second process with the same reply topic fails
// here). correlate reads a reply's correlation id.
func (c *Client) NewRequester(requestTopic, replyTopic string, correlate Correlate, opts ...RequesterOption) (*Requester, error) {
	o := requesterOptions{subscription: "requester"}
	for _, opt := range opts {
		opt(&o)
	}
	// A reply is waited for, but there is no batching delay on the way out: Publish is a synchronous
	// send, which flushes its batch at once. Batching stays on because pulsar-client-go v0.19.0's
	// unbatched send path races with its reconnect (grabCnx rewrites the producer's encryptor while
	// internalSingleSend reads it; go test -race catches it when a connection drops).
	p, err := c.NewProducer(requestTopic)
	if err != nil {
		return nil, err
	}
	consumer, err := c.pc.Subscribe(pulsar.ConsumerOptions{
		Topic:                       replyTopic,
		SubscriptionName:            o.subscription,
		Type:                        pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionLatest,
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("eventbus: requester subscribe to %s: %w", replyTopic, err)
	}
	r := &Requester{
		producer: p, consumer: consumer, replyTo: replyTopic, correlate: correlate,
		waiters: map[string]chan []byte{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "request_reply_requests_total", Help: "Requests sent to the directory, by outcome (replied, timeout, error, late replies).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "request_reply_seconds", Help: "Time from sending a request to its reply.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "request_reply_in_flight", Help: "Requests waiting for their reply.",
		}),
	}
	if o.registerer != nil {
		for _, col := range []prometheus.Collector{r.requests, r.latency, r.inFlight} {
			if err := o.registerer.Register(col); err != nil {
				r.Close()
				return nil, fmt.Errorf("eventbus: requester metrics: %w", err)
			}
		}
	}
	return r, nil
}

// ReplyTo is the topic the replies must be sent to: the reply_to of every request.
func (r *Requester) ReplyTo() string { return r.replyTo }

// Request publishes m, whose reply will carry correlationID, and waits for that reply's payload until
// ctx ends ([ErrNoReply] when ctx's deadline passed).
func (r *Requester) Request(ctx context.Context, correlationID string, m Message) ([]byte, error) {
	ch := make(chan []byte, 1)
	r.mu.Lock()
	if _, dup := r.waiters[correlationID]; dup {
		r.mu.Unlock()
		return nil, fmt.Errorf("eventbus: request %s already in flight", correlationID)
	}
	r.waiters[correlationID] = ch
	r.mu.Unlock()
	r.inFlight.Inc()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, correlationID)
		r.mu.Unlock()
		r.inFlight.Dec()
	}()
	start := time.Now()
	if _, err := r.producer.Publish(ctx, m); err != nil {
		if ctx.Err() != nil {
			r.requests.WithLabelValues("timeout").Inc()
			return nil, fmt.Errorf("%w: %w", ErrNoReply, err)
		}
		r.requests.WithLabelValues("error").Inc()
		return nil, err
	}
	select {
	case b := <-ch:
		r.requests.WithLabelValues("replied").Inc()
		r.latency.Observe(time.Since(start).Seconds())
		return b, nil
	case <-ctx.Done():
		r.requests.WithLabelValues("timeout").Inc()
		return nil, fmt.Errorf("%w: %w", ErrNoReply, ctx.Err())
	}
}

// Run receives replies and hands each to its waiter until ctx ends or the requester is closed.
func (r *Requester) Run(ctx context.Context) error {
	for {
		msg, err := r.consumer.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var perr *pulsar.Error
			if errors.As(err, &perr) && perr.Result() == pulsar.ConsumerClosed {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		_ = r.consumer.Ack(msg)
		r.deliver(ctx, msg)
	}
}

// deliver hands a reply to its waiter, in a consumer span that continues the reply's trace (the
// request's, through the directory).
func (r *Requester) deliver(ctx context.Context, msg pulsar.Message) {
	_, span := r.producer.client.startProcess(ctx, msg)
	defer span.End()
	id, err := r.correlate(msg.Payload(), msg.Properties())
	if err != nil {
		r.requests.WithLabelValues("undecodable").Inc()
		span.SetAttributes(attribute.String("messaging.request_reply.outcome", "undecodable"))
		return
	}
	r.mu.Lock()
	ch, ok := r.waiters[id]
	r.mu.Unlock()
	if !ok {
		r.requests.WithLabelValues("late").Inc()
		span.SetAttributes(attribute.String("messaging.request_reply.outcome", "late"))
		return
	}
	select {
	case ch <- msg.Payload():
		span.SetAttributes(attribute.String("messaging.request_reply.outcome", "replied"))
	default: // a duplicate reply: the first one is already there
		span.SetAttributes(attribute.String("messaging.request_reply.outcome", "duplicate"))
	}
}

// Close removes the reply subscription (the instance's reply topic is then
// unused, and the broker may delete it) and closes the consumer and the
// producer; a running [Requester.Run] returns.
func (r *Requester) Close() {
	_ = r.consumer.Unsubscribe()
	r.consumer.Close()
	r.producer.Close()
}
