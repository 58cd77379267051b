-- name: OpenClaimForKey :one
SELECT id, claim_type, status FROM claims
WHERE key = $1 AND status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');
