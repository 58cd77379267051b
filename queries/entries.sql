-- name: GetEntry :one
SELECT * FROM entries WHERE key = $1;

-- name: GetEntryForUpdate :one
SELECT * FROM entries WHERE key = $1 FOR UPDATE;

-- name: InsertEntry :exec
INSERT INTO entries (
    key, key_type, participant, branch, account_number, account_type, account_opened_at,
    owner_type, owner_tax_id, owner_name, owner_trade_name, status,
    created_at, key_owned_since, updated_at, request_id, cid, cid_w0, cid_w1, cid_w2, cid_w3
) VALUES (
    $1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11, $12,
    $13, $14, $15, $16, $17, $18, $19, $20, $21
);

-- name: UpdateEntry :exec
UPDATE entries SET
    branch = $2, account_number = $3, account_type = $4, account_opened_at = $5,
    owner_name = $6, owner_trade_name = $7, updated_at = $8,
    cid = $9, cid_w0 = $10, cid_w1 = $11, cid_w2 = $12, cid_w3 = $13
WHERE key = $1;

-- name: DeleteEntry :exec
DELETE FROM entries WHERE key = $1;

-- name: CountAccountEntries :one
SELECT count(*) FROM entries
WHERE participant = $1 AND branch = $2 AND account_number = $3 AND account_type = $4;

-- name: LockAccount :exec
-- Serialises writes to one account so the keys-per-account limit holds under
-- concurrency (transaction-scoped advisory lock, released on commit/rollback).
SELECT pg_advisory_xact_lock(hashtextextended(
    sqlc.arg(participant)::text || '/' || sqlc.arg(branch)::text || '/' ||
    sqlc.arg(account_number)::text || '/' || sqlc.arg(account_type)::text, 0));

-- name: ListEntriesByAccount :many
SELECT * FROM entries
WHERE participant = $1 AND branch = $2 AND account_number = $3 AND account_type = $4
  AND key > sqlc.arg(after)::text
ORDER BY key
LIMIT sqlc.arg(page_limit);

-- name: ListEntriesByOwner :many
SELECT * FROM entries
WHERE participant = $1 AND owner_tax_id = $2 AND key > sqlc.arg(after)::text
ORDER BY key
LIMIT sqlc.arg(page_limit);

-- name: ListEntriesByParticipant :many
SELECT * FROM entries
WHERE participant = $1 AND key > sqlc.arg(after)::text
ORDER BY key
LIMIT sqlc.arg(page_limit);

-- name: OwnEntriesExist :many
SELECT key FROM entries WHERE participant = $1 AND key = ANY(sqlc.arg(keys)::text[]);

-- name: VSyncByKeyType :many
-- The VSync of each key type, aggregated from the stored CIDs.
SELECT key_type,
       count(*)::bigint AS entry_count,
       coalesce(bit_xor(cid_w0), 0)::bigint AS w0,
       coalesce(bit_xor(cid_w1), 0)::bigint AS w1,
       coalesce(bit_xor(cid_w2), 0)::bigint AS w2,
       coalesce(bit_xor(cid_w3), 0)::bigint AS w3
FROM entries
WHERE participant = $1
GROUP BY key_type;
