-- name: ClaimLookupBatch :execrows
INSERT INTO lookup_stat_batches (batch_id, applied_at) VALUES ($1, $2)
ON CONFLICT (batch_id) DO NOTHING;

-- name: AddLookupCounts :exec
INSERT INTO key_lookup_stats (key, lookups, last_flush_at)
SELECT unnest(sqlc.arg(keys)::text[]), unnest(sqlc.arg(counts)::bigint[]), sqlc.arg(at)::timestamptz
ON CONFLICT (key) DO UPDATE
SET lookups = key_lookup_stats.lookups + EXCLUDED.lookups,
    last_flush_at = EXCLUDED.last_flush_at;

-- name: GetLookupCount :one
SELECT lookups FROM key_lookup_stats WHERE key = $1;

-- name: DeleteOldLookupBatches :exec
DELETE FROM lookup_stat_batches WHERE applied_at < $1;
