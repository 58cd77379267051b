package eventbus

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
)

// Message is one event to publish.
type Message struct {
	// Key is the partition key: the aggregate id (the PIX key), so one key's events stay in order on a
	// partitioned topic and reach one consumer of a key_shared subscription.
	Key string
	// Payload is the encoded event envelope.
	Payload []byte
	// Properties travel with the message; the producer adds event_id, event_type and the trace context
	// without changing the caller's map.
	Properties map[string]string
	// EventID and EventType are written to the event_id and event_type properties when set; consumers route
	// on the type and deduplicate on the id.
	EventID   string
	EventType string
	// SequenceID, when set, is the broker-deduplication sequence id (the outbox row's id): with a fixed
	// producer name ([WithProducerName]) the broker drops a message whose sequence id is not above the
	// last one it stored from that producer.
	SequenceID *int64
}

// Producer publishes to one topic with LZ4, batching and a send timeout from [Config], recording
// [Metrics], starting a producer span per message ("<topic> publish", a child of the caller's) and
// carrying its trace context in the message properties. It is safe for
// concurrent use.
type Producer struct {
	p      pulsar.Producer
	topic  string
	client *Client
}

// ProducerOption configures [Client.NewProducer].
type ProducerOption func(*producerOptions)

type producerOptions struct {
	name     string
	batching bool
}

// WithProducerName gives the producer a fixed name, the key of the broker's deduplication memory, and
// turns batching off. Only one producer with a given name may be connected to a topic at a time.
//
// Batching is off because pulsar-client-go v0.19.0 sends a batch with its first message's sequence id
// only (no highest_sequence_id): the broker would judge a whole batch by that id, dropping new messages
// batched behind a republished one, or storing again republished ones batched behind a new one.
// [WithBatching] after this option turns it back on for producers that do not republish.
func WithProducerName(name string) ProducerOption {
	return func(o *producerOptions) {
		o.name = name
		o.batching = false
	}
}

// WithBatching turns batching on (the default) or off.
func WithBatching(on bool) ProducerOption { return func(o *producerOptions) { o.batching = on } }

// NewProducer creates a producer of topic. Batches are built per key (pulsar.KeyBasedBatchBuilder) so a
// key_shared subscription still receives each key's messages on one consumer, in order.
func (c *Client) NewProducer(topic string, opts ...ProducerOption) (*Producer, error) {
	o := producerOptions{batching: true}
	for _, opt := range opts {
		opt(&o)
	}
	po := pulsar.ProducerOptions{
		Topic:                   topic,
		Name:                    o.name,
		SendTimeout:             c.cfg.SendTimeout,
		CompressionType:         pulsar.LZ4,
		DisableBatching:         !o.batching,
		BatchingMaxMessages:     c.cfg.BatchMaxMessages,
		BatchingMaxPublishDelay: c.cfg.BatchMaxDelay,
		BatcherBuilderType:      pulsar.KeyBasedBatchBuilder,
	}
	p, err := c.pc.CreateProducer(po)
	if err != nil {
		return nil, fmt.Errorf("eventbus: producer for %s: %w", topic, err)
	}
	return &Producer{p: p, topic: topic, client: c}, nil
}

func (p *Producer) message(ctx context.Context, m Message) *pulsar.ProducerMessage {
	props := cloneProps(m.Properties, 4)
	if m.EventID != "" {
		props[PropertyEventID] = m.EventID
	}
	if m.EventType != "" {
		props[PropertyEventType] = m.EventType
	}
	InjectTrace(ctx, p.client.propagator, props)
	return &pulsar.ProducerMessage{
		Payload:    m.Payload,
		Key:        m.Key,
		Properties: props,
		SequenceID: m.SequenceID,
	}
}

func (p *Producer) record(start time.Time, err error) {
	p.client.metrics.recordSend(baseTopic(p.topic), start, err)
}

// Publish sends m and waits for the broker's acknowledgement, the send timeout or the end of ctx. A
// message the broker dropped as a duplicate returns a message id with ledger and entry -1 and no error.
func (p *Producer) Publish(ctx context.Context, m Message) (pulsar.MessageID, error) {
	start := time.Now()
	ctx, span := p.client.startPublish(ctx, p.topic, m)
	id, err := p.p.Send(ctx, p.message(ctx, m))
	p.record(start, err)
	if err != nil {
		err = fmt.Errorf("eventbus: publish to %s: %w", p.topic, err)
	}
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	return id, nil
}

// PublishAsync queues m and returns; done runs once, from the client's goroutine, with the broker's
// answer or the error (send timeout, closed producer). done must not block. ctx bounds only the queueing
// (it may wait while the pending queue is full) and provides the trace context.
func (p *Producer) PublishAsync(ctx context.Context, m Message, done func(pulsar.MessageID, error)) {
	start := time.Now()
	ctx, span := p.client.startPublish(ctx, p.topic, m)
	p.p.SendAsync(ctx, p.message(ctx, m), func(id pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
		p.record(start, err)
		if err != nil {
			err = fmt.Errorf("eventbus: publish to %s: %w", p.topic, err)
		}
		endSpan(span, err)
		if done != nil {
			done(id, err)
		}
	})
}

// Flush sends what is batched and waits until the broker acknowledged every message queued so far.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.p.FlushWithCtx(ctx); err != nil {
		return fmt.Errorf("eventbus: flush %s: %w", p.topic, err)
	}
	return nil
}

// Close flushes and closes the producer.
func (p *Producer) Close() { p.p.Close() }

// Topic returns the topic the producer publishes to.
func (p *Producer) Topic() string { return p.topic }

// Name returns the producer's name (the fixed one, or the broker's generated one).
func (p *Producer) Name() string { return p.p.Name() }

// Event types of the key events topic. The envelope's typed payload says the same; the property lets a
// consumer route without decoding.
const (
	EventKeyCreated = "KeyCreated"
	EventKeyUpdated = "KeyUpdated"
	EventKeyDeleted = "KeyDeleted"
)

// KeyEventProducer publishes the key events on [Config.TopicKeyEvents], keyed by the PIX key. Envelopes
// arrive encoded (the protobuf event envelope of rpc/dict/v1).
type KeyEventProducer struct{ *Producer }

// NewKeyEventProducer creates the producer of [Config.TopicKeyEvents].
func (c *Client) NewKeyEventProducer(opts ...ProducerOption) (*KeyEventProducer, error) {
	p, err := c.NewProducer(c.cfg.TopicKeyEvents, opts...)
	if err != nil {
		return nil, err
	}
	return &KeyEventProducer{p}, nil
}

// PublishKeyCreated publishes a KeyCreated envelope for key.
func (k *KeyEventProducer) PublishKeyCreated(ctx context.Context, key, eventID string, envelope []byte) (pulsar.MessageID, error) {
	return k.Publish(ctx, Message{Key: key, Payload: envelope, EventID: eventID, EventType: EventKeyCreated})
}

// PublishKeyUpdated publishes a KeyUpdated envelope for key.
func (k *KeyEventProducer) PublishKeyUpdated(ctx context.Context, key, eventID string, envelope []byte) (pulsar.MessageID, error) {
	return k.Publish(ctx, Message{Key: key, Payload: envelope, EventID: eventID, EventType: EventKeyUpdated})
}

// PublishKeyDeleted publishes a KeyDeleted envelope for key.
func (k *KeyEventProducer) PublishKeyDeleted(ctx context.Context, key, eventID string, envelope []byte) (pulsar.MessageID, error) {
	return k.Publish(ctx, Message{Key: key, Payload: envelope, EventID: eventID, EventType: EventKeyDeleted})
}

// ClaimEventProducer publishes claim and portability events on [Config.TopicClaimEvents], keyed by the
// claimed PIX key so a claim's events stay in order with the key's own.
type ClaimEventProducer struct{ *Producer }

// NewClaimEventProducer creates the producer of [Config.TopicClaimEvents].
func (c *Client) NewClaimEventProducer(opts ...ProducerOption) (*ClaimEventProducer, error) {
	p, err := c.NewProducer(c.cfg.TopicClaimEvents, opts...)
	if err != nil {
		return nil, err
	}
	return &ClaimEventProducer{p}, nil
}

// PublishClaimEvent publishes a claim envelope of eventType (ClaimCreated, ClaimConfirmed, …, as the
// envelope's payload names it) for the claimed key.
func (c *ClaimEventProducer) PublishClaimEvent(ctx context.Context, eventType, key, eventID string, envelope []byte) (pulsar.MessageID, error) {
	return c.Publish(ctx, Message{Key: key, Payload: envelope, EventID: eventID, EventType: eventType})
}
