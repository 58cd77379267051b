-- +goose Up
-- The outbox's identity: a random id made once per database. The relay's
-- producer names (the key of the broker's deduplication) include it, so two
-- databases relaying to one topic (two PSPs, or two participants' instances
-- sharing a request topic) never share a producer name, while every relay of
-- one database always uses the same names.
CREATE TABLE outbox_identity (
    id        uuid    NOT NULL DEFAULT gen_random_uuid(),
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);
INSERT INTO outbox_identity DEFAULT VALUES;

-- +goose Down
DROP TABLE outbox_identity;
