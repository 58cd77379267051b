-- +goose Up
-- Claims as this PSP takes part in them (dict/claims.go). A row is one claim
-- of the directory, seen by the local participants that are its claimer
-- (is_claimer) or its donor (is_donor); one instance may serve both sides.
--   * CreateClaim stores the claim as PENDING under its request id, with
--     pending_action CREATE and a DirectoryRequest in the outbox; the
--     directory's response re-keys it to the directory's claim id (OPEN), or
--     marks it FAILED with the directory's reason.
--   * An action (acknowledge, confirm, cancel, complete) keeps the claim's
--     status with pending_action set until the directory's response applies
--     the new status, or its refusal (failure_reason).
--   * DirectoryNotices insert the claims this PSP is donor of and apply the
--     other side's changes.
-- The donor's entry is kept in donor_entry when a confirm removes it, so a
-- cancel after the confirm can restore it as it was.
ALTER TABLE claims DROP CONSTRAINT claims_status_check;
ALTER TABLE claims
    ADD CONSTRAINT claims_status_check CHECK (status IN ('PENDING', 'FAILED', 'OPEN', 'WAITING_RESOLUTION', 'CONFIRMED', 'CANCELLED', 'COMPLETED')),
    ADD COLUMN is_claimer          boolean     NOT NULL DEFAULT false,
    ADD COLUMN is_donor            boolean     NOT NULL DEFAULT false,
    ADD COLUMN claimer_account     jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN claimer_owner       jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN create_request_id   uuid,
    ADD COLUMN cancel_reason       text        NOT NULL DEFAULT '',
    ADD COLUMN confirm_reason      text        NOT NULL DEFAULT '',
    ADD COLUMN pending_action      text        CHECK (pending_action IN ('CREATE', 'ACKNOWLEDGE', 'CONFIRM', 'CANCEL', 'COMPLETE')),
    ADD COLUMN pending_participant text        NOT NULL DEFAULT '',
    ADD COLUMN pending_correlation uuid,
    ADD COLUMN pending_reason      text        NOT NULL DEFAULT '',
    ADD COLUMN pending_request_id  uuid,
    ADD COLUMN failure_reason      text        NOT NULL DEFAULT '',
    ADD COLUMN failure_message     text        NOT NULL DEFAULT '',
    ADD COLUMN donor_entry         jsonb;
-- Rows from before the directory existed were only ever used to lock keys.
UPDATE claims SET is_donor = true;
ALTER TABLE claims
    ADD CONSTRAINT claims_pending CHECK ((pending_action IS NULL) = (pending_correlation IS NULL));

-- BCB: at most one open claim per key; a create waiting for the directory
-- holds its place.
DROP INDEX claims_one_open_per_key;
CREATE UNIQUE INDEX claims_one_open_per_key ON claims (key)
    WHERE status IN ('PENDING', 'OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

CREATE UNIQUE INDEX claims_pending_correlation ON claims (pending_correlation) WHERE pending_correlation IS NOT NULL;
CREATE UNIQUE INDEX claims_create_request ON claims (create_request_id) WHERE create_request_id IS NOT NULL;
-- ListClaims by side, newest first.
CREATE INDEX claims_claimer ON claims (claimer_participant, created_at DESC, id) WHERE is_claimer;
CREATE INDEX claims_donor ON claims (donor_participant, created_at DESC, id) WHERE is_donor;
-- The deadline scheduler's scan of claims still open.
CREATE INDEX claims_due ON claims (resolution_period_end) WHERE status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- +goose Down
DROP INDEX claims_due;
DROP INDEX claims_donor;
DROP INDEX claims_claimer;
DROP INDEX claims_create_request;
DROP INDEX claims_pending_correlation;
DROP INDEX claims_one_open_per_key;
CREATE UNIQUE INDEX claims_one_open_per_key ON claims (key)
    WHERE status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');
ALTER TABLE claims
    DROP CONSTRAINT claims_pending,
    DROP COLUMN donor_entry,
    DROP COLUMN failure_message,
    DROP COLUMN failure_reason,
    DROP COLUMN pending_request_id,
    DROP COLUMN pending_reason,
    DROP COLUMN pending_correlation,
    DROP COLUMN pending_participant,
    DROP COLUMN pending_action,
    DROP COLUMN confirm_reason,
    DROP COLUMN cancel_reason,
    DROP COLUMN create_request_id,
    DROP COLUMN claimer_owner,
    DROP COLUMN claimer_account,
    DROP COLUMN is_donor,
    DROP COLUMN is_claimer,
    DROP CONSTRAINT claims_status_check;
DELETE FROM claims WHERE status IN ('PENDING', 'FAILED');
ALTER TABLE claims
    ADD CONSTRAINT claims_status_check CHECK (status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED', 'CANCELLED', 'COMPLETED'));
