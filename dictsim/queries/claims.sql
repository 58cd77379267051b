-- name: OpenClaimForKey :one
SELECT * FROM claims
WHERE key = $1 AND status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- name: GetClaimForUpdate :one
SELECT * FROM claims WHERE id = $1 FOR UPDATE;

-- name: InsertClaim :exec
INSERT INTO claims (id, claim_type, status, key, claimer_participant, donor_participant, created_at,
    resolution_period_end, completion_period_end, updated_at, claim, donor_entry)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: UpdateClaim :exec
UPDATE claims SET status = $2, updated_at = $3, claim = $4 WHERE id = $1;
