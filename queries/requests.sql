-- name: ClaimRequestID :execrows
-- Inserts the request id; zero rows when it is already taken (a concurrent
-- twin blocks here until the first commits or rolls back).
INSERT INTO requests (request_id, participant, operation, fingerprint)
VALUES ($1, $2, $3, $4)
ON CONFLICT (request_id) DO NOTHING;

-- name: GetRequest :one
SELECT * FROM requests WHERE request_id = $1;

-- name: SetRequestResponse :exec
UPDATE requests SET response = $2 WHERE request_id = $1;
