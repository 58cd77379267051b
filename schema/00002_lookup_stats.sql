-- +goose Up
-- Per-key lookup counters (the statistics a PSP keeps for anti-fraud),
-- counted in Redis and flushed here in batches by the write-behind counter.
CREATE TABLE key_lookup_stats (
    key            text        PRIMARY KEY,
    lookups        bigint      NOT NULL CHECK (lookups >= 0),
    last_flush_at  timestamptz NOT NULL
);

-- Batches already applied, so a batch retried after a crash between the
-- PostgreSQL commit and the Redis cleanup is never counted twice.
CREATE TABLE lookup_stat_batches (
    batch_id   text        PRIMARY KEY,
    applied_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE lookup_stat_batches;
DROP TABLE key_lookup_stats;
