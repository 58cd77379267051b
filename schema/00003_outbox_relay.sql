-- +goose Up
-- The outbox relay (eventbus/relay.go). Rows are split into lanes by their
-- partition key, so one key's events always share a lane; one relay at a time
-- holds a lane's lease and publishes it in order. Within a lane, lane_seq is
-- the publish order and the Pulsar sequence id: it is assigned (and
-- committed) before a row is sent, so a relay that dies between sending and
-- marking re-sends the same ids and the broker's deduplication drops them.
ALTER TABLE outbox
    ADD COLUMN seq         bigint   GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN lane        smallint GENERATED ALWAYS AS ((abs(hashtext(partition_key)::bigint) % 16)::smallint) STORED,
    ADD COLUMN lane_seq    bigint,
    ADD COLUMN attempts    int      NOT NULL DEFAULT 0,
    ADD COLUMN last_error  text,
    -- W3C trace context of the request that wrote the row, sent as a message property.
    ADD COLUMN traceparent text;

DROP INDEX outbox_unpublished;
-- Rows still to be sequenced, in insert order, per lane.
CREATE INDEX outbox_unsequenced ON outbox (lane, seq) WHERE published_at IS NULL AND lane_seq IS NULL;
-- Rows sequenced but not yet acknowledged, in publish order, per lane.
CREATE INDEX outbox_unpublished ON outbox (lane, lane_seq) WHERE published_at IS NULL AND lane_seq IS NOT NULL;
-- Backlog age.
CREATE INDEX outbox_unpublished_age ON outbox (created_at) WHERE published_at IS NULL;

-- One row per lane: who publishes it, until when, and its next sequence id.
CREATE TABLE outbox_lanes (
    lane        smallint    PRIMARY KEY,
    owner       text        NOT NULL DEFAULT '',
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    next_seq    bigint      NOT NULL DEFAULT 1
);
INSERT INTO outbox_lanes (lane) SELECT generate_series(0, 15);

-- Wake the relay holding the row's lane; the relay also polls, so a lost
-- notification only delays a row.
-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', NEW.lane::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_notify();

-- +goose Down
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox_lanes;
DROP INDEX outbox_unpublished_age;
DROP INDEX outbox_unpublished;
DROP INDEX outbox_unsequenced;
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
ALTER TABLE outbox
    DROP COLUMN traceparent,
    DROP COLUMN last_error,
    DROP COLUMN attempts,
    DROP COLUMN lane_seq,
    DROP COLUMN lane,
    DROP COLUMN seq;
