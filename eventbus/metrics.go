package eventbus

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the seed's Pulsar metrics, labelled by topic (a partition's name is reported as its
// partitioned topic's):
//
//   - pulsar_messages_sent_total: messages the broker acknowledged to a [Producer];
//   - pulsar_messages_received_total: messages a [Consumer] received, before its handler ran;
//   - pulsar_publish_latency_seconds: from Publish to the broker's acknowledgement, failures included;
//   - pulsar_consumer_lag: seconds between the broker's publish time of the last message received on the
//     topic and its receipt. It is measured in the consumer, which needs no admin API and works the same on
//     every subscription type; it includes clock skew between broker and consumer and keeps its last value
//     while the topic is idle (the subscription backlog, in messages, is on the broker's own metrics).
type Metrics struct {
	sent           *prometheus.CounterVec
	received       *prometheus.CounterVec
	publishLatency *prometheus.HistogramVec
	lag            *prometheus.GaugeVec
}

// NewMetrics registers the metrics in reg. Registering again in the same registry (a second client, a
// restarted component) returns collectors that share the first registration's series.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	var err error
	m := &Metrics{}
	if m.sent, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsar_messages_sent_total",
		Help: "Messages acknowledged by the Pulsar broker, by topic.",
	}, []string{"topic"})); err != nil {
		return nil, err
	}
	if m.received, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pulsar_messages_received_total",
		Help: "Messages received from Pulsar, by topic, counted before their handler runs.",
	}, []string{"topic"})); err != nil {
		return nil, err
	}
	if m.publishLatency, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pulsar_publish_latency_seconds",
		Help:    "Time from publish to the broker's acknowledgement, by topic.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"topic"})); err != nil {
		return nil, err
	}
	if m.lag, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pulsar_consumer_lag",
		Help: "Seconds between the broker's publish time of the last received message and its receipt, by topic.",
	}, []string{"topic"})); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, fmt.Errorf("eventbus: registering metrics: %w", err)
	}
	return c, nil
}

// baseTopic strips the "-partition-N" suffix Pulsar gives a partition of a partitioned topic.
func baseTopic(topic string) string {
	i := strings.LastIndex(topic, "-partition-")
	if i < 0 {
		return topic
	}
	n := topic[i+len("-partition-"):]
	if n == "" {
		return topic
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return topic
		}
	}
	return topic[:i]
}

// recordSend records one send to topic (already a base topic) that started at start: its latency in
// pulsar_publish_latency_seconds, failures included, and, once the broker acknowledged it, one more
// pulsar_messages_sent_total. A [Producer] and the outbox relay both record through it.
func (m *Metrics) recordSend(topic string, start time.Time, err error) {
	m.publishLatency.WithLabelValues(topic).Observe(time.Since(start).Seconds())
	if err == nil {
		m.sent.WithLabelValues(topic).Inc()
	}
}

// Sent returns the pulsar_messages_sent_total counter of topic.
func (m *Metrics) Sent(topic string) prometheus.Counter {
	return m.sent.WithLabelValues(baseTopic(topic))
}

// Received returns the pulsar_messages_received_total counter of topic.
func (m *Metrics) Received(topic string) prometheus.Counter {
	return m.received.WithLabelValues(baseTopic(topic))
}
