-- +goose Up
-- Two-phase writes (dict/directory.go): a write is kept locally as pending,
-- with its DirectoryRequest in the outbox, until the directory's
-- DirectoryResponse confirms or refuses it.
--   * create: the row exists with status PENDING and pending_op CREATE; an EVP
--     create is keyed by its request id (the directory generates the key) and
--     re-keyed when the response brings it. Refused: status FAILED, the
--     directory's reason in failure_reason.
--   * update/delete: the row keeps its current (confirmed) data with status
--     PENDING and pending_op UPDATE/DELETE; an update's new data waits in
--     pending_change. Confirmed: applied (update) or the row removed
--     (delete). Refused: back to ACTIVE, the reason in failure_reason.
-- pending_correlation is the outbox row id the DirectoryRequest went out
-- under: the response names it (correlation_id).
ALTER TABLE entries
    ADD COLUMN pending_op          text  CHECK (pending_op IN ('CREATE', 'UPDATE', 'DELETE')),
    ADD COLUMN pending_request_id  uuid,
    ADD COLUMN pending_correlation uuid,
    ADD COLUMN pending_reason      text  NOT NULL DEFAULT '',
    ADD COLUMN pending_change      jsonb,
    ADD COLUMN failure_reason      text  NOT NULL DEFAULT '',
    ADD COLUMN failure_message     text  NOT NULL DEFAULT '',
    ADD CONSTRAINT entries_pending CHECK ((pending_op IS NULL) = (pending_correlation IS NULL)),
    ADD CONSTRAINT entries_pending_status CHECK ((pending_op IS NULL) = (status <> 'PENDING'));

CREATE UNIQUE INDEX entries_pending_correlation ON entries (pending_correlation) WHERE pending_correlation IS NOT NULL;
-- GetKey of a pending EVP by the request id that created it.
CREATE INDEX entries_request_id ON entries (request_id);

-- +goose Down
DROP INDEX entries_request_id;
DROP INDEX entries_pending_correlation;
ALTER TABLE entries
    DROP CONSTRAINT entries_pending_status,
    DROP CONSTRAINT entries_pending,
    DROP COLUMN failure_message,
    DROP COLUMN failure_reason,
    DROP COLUMN pending_change,
    DROP COLUMN pending_reason,
    DROP COLUMN pending_correlation,
    DROP COLUMN pending_request_id,
    DROP COLUMN pending_op;
