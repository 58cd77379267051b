-- name: GetProcessed :one
SELECT * FROM processed_requests WHERE correlation_id = $1;

-- name: InsertProcessed :execrows
INSERT INTO processed_requests (correlation_id, participant, operation, reply_to, partition_key, response,
    notice_topic, notice, processed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (correlation_id) DO NOTHING;

-- name: GetRequestID :one
SELECT * FROM request_ids WHERE participant = $1 AND request_id = $2;

-- name: InsertRequestID :exec
INSERT INTO request_ids (participant, request_id, operation, fingerprint, response, created_at)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: LearnParticipant :exec
INSERT INTO participants (ispb, notice_topic, configured, updated_at)
VALUES ($1, $2, false, $3)
ON CONFLICT (ispb) DO UPDATE SET notice_topic = EXCLUDED.notice_topic, updated_at = EXCLUDED.updated_at
WHERE NOT participants.configured AND participants.notice_topic <> EXCLUDED.notice_topic;

-- name: ConfigureParticipant :exec
INSERT INTO participants (ispb, notice_topic, configured, updated_at)
VALUES ($1, $2, true, $3)
ON CONFLICT (ispb) DO UPDATE SET notice_topic = EXCLUDED.notice_topic, configured = true, updated_at = EXCLUDED.updated_at;

-- name: ParticipantNoticeTopic :one
SELECT notice_topic FROM participants WHERE ispb = $1;
