-- name: InsertOutbox :exec
INSERT INTO outbox (id, created_at, topic, partition_key, event_type, aggregate_type, aggregate_id, participant, content_type, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: ListOutboxByAggregate :many
SELECT * FROM outbox WHERE aggregate_id = $1 ORDER BY created_at, id;
