-- name: OpenClaimForKey :one
SELECT id, claim_type, status FROM claims
WHERE key = $1 AND status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- name: ClaimHoldingKey :one
-- The claim, pending or open, that holds key's place (one at most).
SELECT * FROM claims
WHERE key = $1 AND status IN ('PENDING', 'OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- name: InsertClaim :exec
INSERT INTO claims (
    id, claim_type, status, key_type, key, claimer_participant, donor_participant,
    resolution_period_end, completion_period_end, created_at, updated_at,
    is_claimer, is_donor, claimer_account, claimer_owner, create_request_id, cancel_reason,
    pending_action, pending_participant, pending_correlation, pending_request_id
) VALUES (
    $1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11,
    $12, $13, $14, $15, sqlc.narg(create_request_id), $16,
    sqlc.narg(pending_action), $17, sqlc.narg(pending_correlation), sqlc.narg(pending_request_id)
);

-- name: GetClaim :one
SELECT * FROM claims WHERE id = $1;

-- name: GetClaimForUpdate :one
SELECT * FROM claims WHERE id = $1 FOR UPDATE;

-- name: GetClaimByCreateRequest :one
SELECT * FROM claims WHERE create_request_id = $1;

-- name: GetClaimByCorrelation :one
SELECT * FROM claims WHERE pending_correlation = $1 FOR UPDATE;

-- name: ClaimCorrelationExists :one
SELECT EXISTS (SELECT 1 FROM claims WHERE pending_correlation = $1);

-- name: SetClaimPending :exec
UPDATE claims SET
    pending_action = $2, pending_participant = $3, pending_correlation = $4,
    pending_reason = $5, pending_request_id = sqlc.narg(pending_request_id),
    failure_reason = '', failure_message = '', updated_at = $6
WHERE id = $1;

-- name: RefuseClaim :exec
-- The directory refused the pending action: the claim stays as it was
-- (a refused create becomes FAILED), with the directory's reason.
UPDATE claims SET
    status = $2, failure_reason = $3, failure_message = $4, updated_at = $5,
    pending_action = NULL, pending_participant = '', pending_correlation = NULL,
    pending_reason = '', pending_request_id = NULL
WHERE id = $1;

-- name: OpenClaimFromDirectory :exec
-- The directory accepted a create: the claim takes the directory's id,
-- status and periods.
UPDATE claims SET
    id = sqlc.arg(new_id), status = sqlc.arg(status), resolution_period_end = sqlc.arg(resolution_period_end),
    completion_period_end = sqlc.arg(completion_period_end), created_at = sqlc.arg(created_at),
    updated_at = sqlc.arg(updated_at), donor_participant = sqlc.arg(donor_participant),
    pending_action = NULL, pending_participant = '', pending_correlation = NULL,
    pending_reason = '', pending_request_id = NULL, failure_reason = '', failure_message = ''
WHERE id = sqlc.arg(id);

-- name: SetClaimStatus :exec
-- A status the directory decided (its response or notice).
UPDATE claims SET
    status = sqlc.arg(status), cancel_reason = sqlc.arg(cancel_reason), confirm_reason = sqlc.arg(confirm_reason),
    updated_at = sqlc.arg(updated_at),
    is_claimer = is_claimer OR sqlc.arg(claimer)::boolean, is_donor = is_donor OR sqlc.arg(donor)::boolean,
    pending_action = NULL, pending_participant = '', pending_correlation = NULL,
    pending_reason = '', pending_request_id = NULL, failure_reason = '', failure_message = ''
WHERE id = sqlc.arg(id);

-- name: SetClaimDonorEntry :exec
UPDATE claims SET donor_entry = $2 WHERE id = $1;

-- name: ListClaims :many
-- The claims participant takes part in on the sides asked, newest first,
-- keyset-paged by (created_at, id).
SELECT * FROM claims
WHERE ((sqlc.arg(as_claimer)::boolean AND is_claimer AND claimer_participant = sqlc.arg(participant))
    OR (sqlc.arg(as_donor)::boolean AND is_donor AND donor_participant = sqlc.arg(participant)))
  AND (cardinality(sqlc.arg(statuses)::text[]) = 0 OR status = ANY(sqlc.arg(statuses)::text[]))
  AND (NOT sqlc.arg(paged)::boolean OR (created_at, id) < (sqlc.arg(after_created)::timestamptz, sqlc.arg(after_id)::uuid))
ORDER BY created_at DESC, id DESC
LIMIT sqlc.arg(page_limit);

-- name: DueClaims :many
-- Claims whose deadline passed with no action pending, locked for this
-- scheduler run; another instance skips them.
SELECT * FROM claims
WHERE pending_action IS NULL AND (
      (is_donor AND status IN ('OPEN', 'WAITING_RESOLUTION') AND resolution_period_end <= sqlc.arg(now)::timestamptz)
   OR (is_claimer AND claim_type = 'OWNERSHIP' AND status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED')
       AND created_at <= sqlc.arg(validation_start)::timestamptz))
ORDER BY resolution_period_end
LIMIT sqlc.arg(batch)
FOR UPDATE SKIP LOCKED;

-- name: SetEntryClaimLock :exec
-- Locks (LOCKED_BY_CLAIM) or unlocks (ACTIVE) the donor's entry; an entry
-- with a write pending keeps its status.
UPDATE entries SET status = $2, updated_at = $3
WHERE key = $1 AND status IN ('ACTIVE', 'LOCKED_BY_CLAIM');
