-- name: LatestSyncChecks :many
SELECT DISTINCT ON (key_type) key_type, checked_at, result
FROM sync_checks
WHERE participant = $1
ORDER BY key_type, checked_at DESC, id DESC;

-- name: InsertSyncCheck :exec
INSERT INTO sync_checks (participant, key_type, checked_at, local_vsync, dict_vsync, result,
                         entries, dict_entries, added, updated, removed, skipped)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: ClaimSyncCheck :execrows
-- Takes the check of one participant's key type when it is due (or never
-- ran), moving its next time to @next_check_at; 0 rows when another
-- instance took it or it is not due.
INSERT INTO sync_schedule (participant, key_type, next_check_at)
VALUES (@participant, @key_type, @next_check_at)
ON CONFLICT (participant, key_type) DO UPDATE SET next_check_at = EXCLUDED.next_check_at
WHERE sync_schedule.next_check_at <= @now::timestamptz;

-- name: SetSyncCheckDue :exec
-- When the check of one participant's key type is due next.
UPDATE sync_schedule SET next_check_at = @next_check_at
WHERE participant = @participant AND key_type = @key_type;

-- name: LocalVSync :one
-- The VSync of one key type (the set VSyncByKeyType aggregates).
SELECT count(*)::bigint AS entry_count,
       coalesce(bit_xor(cid_w0), 0)::bigint AS w0,
       coalesce(bit_xor(cid_w1), 0)::bigint AS w1,
       coalesce(bit_xor(cid_w2), 0)::bigint AS w2,
       coalesce(bit_xor(cid_w3), 0)::bigint AS w3
FROM entries
WHERE participant = $1 AND key_type = $2 AND status <> 'FAILED' AND pending_op IS DISTINCT FROM 'CREATE';

-- name: SyncLocalEntries :many
-- Every row of one participant's key type, whatever its status: the
-- reconciliation diffs the VSync set and steps around pending writes.
SELECT * FROM entries WHERE participant = $1 AND key_type = $2 ORDER BY key;

-- name: AuditWatermark :one
SELECT coalesce(max(id), 0)::bigint FROM audit_log;

-- name: KeyChangedSince :one
-- Whether key has an audit row after the watermark: a change the
-- directory's list may not reflect.
SELECT EXISTS (SELECT 1 FROM audit_log WHERE key = @key AND id > @watermark::bigint);

-- name: OverwriteEntry :execrows
-- A reconciliation repair: the directory's copy of an entry replaces ours.
UPDATE entries SET
    branch = @branch, account_number = @account_number, account_type = @account_type, account_opened_at = @account_opened_at,
    owner_type = @owner_type, owner_tax_id = @owner_tax_id, owner_name = @owner_name, owner_trade_name = @owner_trade_name,
    key_owned_since = @key_owned_since, updated_at = @updated_at, request_id = @request_id,
    cid = @cid, cid_w0 = @cid_w0, cid_w1 = @cid_w1, cid_w2 = @cid_w2, cid_w3 = @cid_w3,
    failure_reason = '', failure_message = ''
WHERE key = @key AND status = 'ACTIVE' AND pending_op IS NULL;
