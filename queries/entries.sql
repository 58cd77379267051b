-- name: GetEntry :one
SELECT * FROM entries WHERE key = $1;

-- name: GetEntryForUpdate :one
SELECT * FROM entries WHERE key = $1 FOR UPDATE;

-- name: InsertEntry :exec
INSERT INTO entries (
    key, key_type, participant, branch, account_number, account_type, account_opened_at,
    owner_type, owner_tax_id, owner_name, owner_trade_name, status,
    created_at, key_owned_since, updated_at, request_id, cid, cid_w0, cid_w1, cid_w2, cid_w3,
    pending_op, pending_request_id, pending_correlation
) VALUES (
    $1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11, $12,
    $13, $14, $15, $16, $17, $18, $19, $20, $21,
    sqlc.narg(pending_op), sqlc.narg(pending_request_id), sqlc.narg(pending_correlation)
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
-- A refused (FAILED) create holds no key; a pending one holds its place.
SELECT count(*) FROM entries
WHERE participant = $1 AND branch = $2 AND account_number = $3 AND account_type = $4 AND status <> 'FAILED';

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
-- Keys the directory holds for the participant: confirmed, or with an update
-- or delete still pending.
SELECT key FROM entries WHERE participant = $1 AND key = ANY(sqlc.arg(keys)::text[])
  AND status <> 'FAILED' AND pending_op IS DISTINCT FROM 'CREATE';

-- name: VSyncByKeyType :many
-- The VSync of each key type, aggregated from the stored CIDs.
SELECT key_type,
       count(*)::bigint AS entry_count,
       coalesce(bit_xor(cid_w0), 0)::bigint AS w0,
       coalesce(bit_xor(cid_w1), 0)::bigint AS w1,
       coalesce(bit_xor(cid_w2), 0)::bigint AS w2,
       coalesce(bit_xor(cid_w3), 0)::bigint AS w3
FROM entries
WHERE participant = $1 AND status <> 'FAILED' AND pending_op IS DISTINCT FROM 'CREATE'
GROUP BY key_type;

-- name: SetEntryPending :exec
-- Records a pending update or delete; the row's data stays as confirmed.
UPDATE entries SET status = 'PENDING', pending_op = @pending_op::text, pending_request_id = @pending_request_id,
    pending_correlation = @pending_correlation, pending_reason = @pending_reason::text,
    pending_change = sqlc.narg(pending_change), failure_reason = '', failure_message = '', updated_at = @updated_at
WHERE key = @key;

-- name: GetEntryByCorrelation :one
SELECT * FROM entries WHERE pending_correlation = $1 FOR UPDATE;

-- name: GetEVPEntryByRequest :one
SELECT * FROM entries WHERE request_id = $1 AND key_type = 'EVP' AND participant = $2
ORDER BY created_at DESC LIMIT 1;

-- name: ConfirmEntry :exec
-- Applies a confirmed create or update: the directory's key (an EVP create is
-- re-keyed) and CID, the data, status ACTIVE, nothing pending.
UPDATE entries SET
    key = @new_key::text,
    branch = @branch, account_number = @account_number, account_type = @account_type, account_opened_at = @account_opened_at,
    owner_name = @owner_name, owner_trade_name = @owner_trade_name, updated_at = @updated_at,
    cid = @cid, cid_w0 = @cid_w0, cid_w1 = @cid_w1, cid_w2 = @cid_w2, cid_w3 = @cid_w3,
    status = 'ACTIVE', pending_op = NULL, pending_request_id = NULL, pending_correlation = NULL,
    pending_reason = '', pending_change = NULL, failure_reason = '', failure_message = ''
WHERE key = @key;

-- name: RefuseEntry :exec
-- Records the directory's refusal: a create becomes FAILED, an update or
-- delete leaves the entry ACTIVE as it was.
UPDATE entries SET
    status = @status::text, pending_op = NULL, pending_request_id = NULL, pending_correlation = NULL,
    pending_reason = '', pending_change = NULL,
    failure_reason = @failure_reason::text, failure_message = @failure_message::text, updated_at = @updated_at
WHERE key = @key;

-- name: StalePendingRequests :many
-- The DirectoryRequests of writes still pending that have waited long enough
-- for the directory's answer to be sent again (a request or its response was
-- lost). A write's requests are its first one and the re-sends made since
-- (the same key's, later in the outbox). The wait counts from when they
-- reached the broker, not from when they were written: a request is due
-- only once all of them are published (one still in the outbox, as during a
-- broker outage, has not reached the directory, and a copy would only queue
-- behind it) and the last one was published longer ago than @age_seconds,
-- doubled for every re-send already made (at most 16 times), so that a
-- directory working through a backlog slower than the age gets a few copies
-- rather than one per age and key. The publication time
-- (outbox_publication: when the relay marked the row's round acknowledged)
-- is the database's clock, so the age is measured with it too. Every
-- instance runs it every third of the age: it reads the pending writes and
-- their requests through indexes (entries_pending_correlation,
-- outbox_directory_requests), never a whole table.
WITH pending AS (
    SELECT e.key, o.seq, o.created_at, o.topic, o.partition_key, o.aggregate_id, o.participant, o.payload, o.traceparent
    FROM entries e JOIN outbox o ON o.id = e.pending_correlation
    JOIN outbox_publication op ON op.id = o.id
    WHERE e.status = 'PENDING' AND op.published
), sent AS (
    SELECT p.key, max(rp.published_at) AS last_published, bool_and(rp.published) AS all_published,
           power(2, least(count(*) - 1, 4)) AS backoff
    FROM pending p JOIN outbox r ON r.aggregate_id = p.key AND r.event_type = 'DirectoryRequest' AND r.seq >= p.seq
    JOIN outbox_publication rp ON rp.id = r.id
    GROUP BY p.key
)
SELECT p.topic, p.partition_key, p.aggregate_id, p.participant, p.payload, p.traceparent
FROM pending p JOIN sent s ON s.key = p.key
WHERE s.all_published
  AND s.last_published < now() - interval '1 second' * s.backoff * @age_seconds::float8
ORDER BY p.created_at
LIMIT @max_rows::int;
