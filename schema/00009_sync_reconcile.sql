-- +goose Up
-- Reconciliation with the directory (dict/sync.go). A check whose VSync
-- differs records MISMATCH, repairs this side from the directory's CIDs and
-- re-checks: REPAIRED when the VSyncs then agree, MISMATCH again when not.
-- The repair's counts are kept with the check that followed it.
ALTER TABLE sync_checks DROP CONSTRAINT sync_checks_result_check;
ALTER TABLE sync_checks
    ADD CONSTRAINT sync_checks_result_check CHECK (result IN ('MATCH', 'MISMATCH', 'REPAIRED')),
    ADD COLUMN entries       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN dict_entries  bigint  NOT NULL DEFAULT 0,
    ADD COLUMN added         integer NOT NULL DEFAULT 0,
    ADD COLUMN updated       integer NOT NULL DEFAULT 0,
    ADD COLUMN removed       integer NOT NULL DEFAULT 0,
    ADD COLUMN skipped       integer NOT NULL DEFAULT 0;

-- When each participant's key type is next due for a check. An instance
-- takes a due check by moving next_check_at forward in one statement, so
-- one check runs per interval across all instances.
CREATE TABLE sync_schedule (
    participant   text        NOT NULL,
    key_type      text        NOT NULL,
    next_check_at timestamptz NOT NULL,
    PRIMARY KEY (participant, key_type)
);

-- +goose Down
DROP TABLE sync_schedule;
ALTER TABLE sync_checks
    DROP COLUMN skipped,
    DROP COLUMN removed,
    DROP COLUMN updated,
    DROP COLUMN added,
    DROP COLUMN dict_entries,
    DROP COLUMN entries,
    DROP CONSTRAINT sync_checks_result_check;
ALTER TABLE sync_checks
    ADD CONSTRAINT sync_checks_result_check CHECK (result IN ('MATCH', 'MISMATCH'));
