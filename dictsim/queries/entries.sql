-- name: LockKey :exec
SELECT pg_advisory_xact_lock(hashtextextended(@name::text, 0));

-- name: GetEntry :one
SELECT * FROM entries WHERE key = $1;

-- name: GetEntryForUpdate :one
SELECT * FROM entries WHERE key = $1 FOR UPDATE;

-- name: InsertEntry :exec
INSERT INTO entries (key, key_type, participant, branch, account_number, account_type, account_opened_at,
    owner_type, owner_tax_id, owner_name, owner_trade_name, created_at, key_owned_since, updated_at,
    request_id, cid, cid_w0, cid_w1, cid_w2, cid_w3)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);

-- name: UpdateEntry :exec
UPDATE entries SET participant = $2, branch = $3, account_number = $4, account_type = $5,
    account_opened_at = $6, owner_name = $7, owner_trade_name = $8, updated_at = $9,
    cid = $10, cid_w0 = $11, cid_w1 = $12, cid_w2 = $13, cid_w3 = $14
WHERE key = $1;

-- name: DeleteEntry :execrows
DELETE FROM entries WHERE key = $1;

-- name: CountAccountEntries :one
SELECT count(*) FROM entries
WHERE participant = $1 AND branch = $2 AND account_number = $3 AND account_type = $4;

-- name: ExistingKeys :many
SELECT key FROM entries WHERE key = ANY(@keys::text[]);

-- name: VSync :one
SELECT count(*)::bigint AS entries,
    COALESCE(bit_xor(cid_w0), 0)::bigint AS w0, COALESCE(bit_xor(cid_w1), 0)::bigint AS w1,
    COALESCE(bit_xor(cid_w2), 0)::bigint AS w2, COALESCE(bit_xor(cid_w3), 0)::bigint AS w3
FROM entries WHERE participant = $1 AND key_type = $2;

-- name: ListEntries :many
SELECT * FROM entries WHERE participant = $1 AND key_type = $2 ORDER BY key;
