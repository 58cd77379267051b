-- +goose Up
-- Less work per outbox row for the relay (eventbus/relay.go, issue 4).
--
-- Wake the relay once per lane and statement instead of once per row: the
-- row trigger of 00003 ran plpgsql and pg_notify for every inserted row, a
-- sixth of the cost of a multi-row INSERT into the outbox. The notification
-- (channel "outbox", payload the lane) is unchanged.
-- +goose StatementBegin
CREATE FUNCTION outbox_notify_lanes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', d.lane::text) FROM (SELECT DISTINCT lane FROM outbox_new) d;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS outbox_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify_lanes();

-- The backlog age index cost an entry on every insert and on every row the
-- relay sequences, and, on a table without statistics yet, drew the
-- planner's relay statements to scan the whole backlog through it. The
-- backlog gauges read outbox_unsequenced and outbox_unpublished instead,
-- which between them hold exactly the unpublished rows.
DROP INDEX outbox_unpublished_age;

-- +goose Down
CREATE INDEX outbox_unpublished_age ON outbox (created_at) WHERE published_at IS NULL;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify_lanes();
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
