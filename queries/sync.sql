-- name: LatestSyncChecks :many
SELECT DISTINCT ON (key_type) key_type, checked_at, result
FROM sync_checks
WHERE participant = $1
ORDER BY key_type, checked_at DESC;
