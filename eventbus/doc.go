// Package eventbus is core-dict's link to Apache Pulsar: the client built from configuration, producers
// and consumers (with a handler registry and a dead-letter topic), the transactional outbox writer and the
// relay that publishes what PostgreSQL committed, trace propagation through message properties, and the
// request/reply exchange with the central directory over the RSFN topics.
//
// Nothing is published inside a request: the relay publishes committed outbox rows, and the broker's
// deduplication (producer name plus sequence id) makes a re-publish after a crash harmless.
//
// Tests run against a real broker: `scripts/deps.sh up` starts a Pulsar standalone on
// pulsar://127.0.0.1:6650 (PULSAR_URL) with its admin API on http://127.0.0.1:8080 (PULSAR_ADMIN_URL).
package eventbus
