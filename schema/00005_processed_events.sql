-- +goose Up
-- The events each consumer has applied (eventbus/once.go). A handler's
-- effects and its event's row commit in one transaction, and the primary key
-- makes a redelivered event, or one raced by two consumer processes, apply
-- once: the second insert waits for the first transaction and then finds the
-- row (or, if that one rolled back, inserts it and applies the event itself).
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Pruning: events older than the broker's retention cannot come back.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

-- +goose Down
DROP TABLE processed_events;
