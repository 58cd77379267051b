-- name: InsertAudit :exec
INSERT INTO audit_log (at, participant, actor, action, key, request_id, reason, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: ListAudit :many
SELECT * FROM audit_log WHERE key = $1 ORDER BY id;
