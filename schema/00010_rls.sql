-- +goose Up
-- Row-level security: a transaction sees and changes only the rows of the
-- participants it acts for, whatever its SQL says.
--
-- The participant set. Every transaction of the service starts with
--     SELECT set_config('app.participants', '<ISPB>[,<ISPB>...]', true)
-- (SET LOCAL: it ends with the transaction; dict/store.go). A request acts
-- for its caller's participant (the token's ISPB); a policy lets a row
-- through only when its participant is in that set, for reading (USING)
-- and for writing (WITH CHECK). A transaction that never set it reads
-- current_setting(..., true) as NULL or '': no row is visible, an UPDATE
-- or DELETE changes 0 rows and an INSERT fails.
--
-- Roles. The tables belong to the role that runs these migrations (the
-- owner, `coredict` locally: MIGRATE_DATABASE_URL); an owner is exempt from
-- its tables' policies, so the service connects as coredict_app
-- (DATABASE_URL), which owns nothing, may only read and write rows, and
-- does not bypass row-level security. `core-dict serve` refuses to start
-- when DATABASE_URL's role is a superuser, has BYPASSRLS or owns the
-- tables. The role must exist before this migration runs (it is
-- cluster-wide and has a password): scripts/deps.sh creates it locally; in
-- production, CREATE ROLE coredict_app LOGIN PASSWORD '...' first.
--
-- FORCE ROW LEVEL SECURITY is deliberately not set: it would subject the
-- owner too, so data migrations would silently see no rows and the two
-- SECURITY DEFINER functions below (which run as the owner) could not do
-- their one job. The guarantee FORCE would add (the service never runs as
-- the owner) is given by the start-up check instead, which refuses to serve
-- rather than serve unprotected.
--
-- Work that spans participants (the claim deadline scheduler, the
-- directory's responses and notices, the re-send of stale requests, the
-- VSync reconciliation, the outbox relay) gets no bypass: it sets the full
-- participant set this instance is configured to serve (DICT_PARTICIPANTS),
-- explicitly, in its own code (dict.Service's workerScope; the relay's
-- pool, main.go). A BYPASSRLS role for them was rejected: it needs a
-- superuser to create and a second set of credentials in the service, and a
-- bug in those workers would reach every participant's rows, including
-- ones this instance does not serve.
--
-- Participant-owned tables, and their participant column:
--   entries, requests, audit_log, outbox, sync_checks, sync_schedule: participant
--   claims: claimer_participant or donor_participant (a claim is visible to both sides)
-- Not participant-owned (no policy): key_lookup_stats and lookup_stat_batches
-- (PSP-wide counters by key, of any participant's keys, no participant
-- column), processed_events (the consumers' apply-once record, by event
-- id), outbox_lanes and outbox_identity (the relay's bookkeeping), and
-- goose's version table. A new participant-owned table must get the same
-- ENABLE ROW LEVEL SECURITY and policy in its own migration.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coredict_app') THEN
        RAISE EXCEPTION 'role coredict_app does not exist: create it before migrating (scripts/deps.sh up postgres does; in production CREATE ROLE coredict_app LOGIN PASSWORD ...)';
    END IF;
END
$$;
-- +goose StatementEnd

-- The service's role reads and writes rows; it owns and creates nothing.
GRANT USAGE ON SCHEMA public TO coredict_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO coredict_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO coredict_app;
REVOKE ALL ON goose_db_version FROM coredict_app;
-- Tables and sequences later migrations create get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO coredict_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO coredict_app;

ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON entries
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE claims ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON claims
    USING (claimer_participant = ANY (string_to_array(current_setting('app.participants', true), ','))
        OR donor_participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (claimer_participant = ANY (string_to_array(current_setting('app.participants', true), ','))
        OR donor_participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON requests
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON audit_log
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON outbox
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE sync_checks ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON sync_checks
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

ALTER TABLE sync_schedule ENABLE ROW LEVEL SECURITY;
CREATE POLICY participant_set ON sync_schedule
    USING (participant = ANY (string_to_array(current_setting('app.participants', true), ',')))
    WITH CHECK (participant = ANY (string_to_array(current_setting('app.participants', true), ',')));

-- Keys are unique across participants, so creating a key another
-- participant of this instance holds fails on the primary key without
-- the creator seeing that entry. entry_holder tells the creator only what
-- BCB's conflict reasons need: whether the holder is in the transaction's
-- participant set, and whether its owner is the given tax id. It runs as
-- the owner (exempt from the policies) and returns nothing else.
-- +goose StatementBegin
CREATE FUNCTION entry_holder(p_key text, p_owner_tax_id text)
RETURNS TABLE (in_participant_set boolean, same_owner boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.participant = ANY (string_to_array(current_setting('app.participants', true), ',')),
           e.owner_tax_id = p_owner_tax_id
    FROM public.entries e
    WHERE e.key = p_key
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION entry_holder(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION entry_holder(text, text) TO coredict_app;

-- +goose Down
DROP FUNCTION entry_holder(text, text);
DROP POLICY participant_set ON sync_schedule;
DROP POLICY participant_set ON sync_checks;
DROP POLICY participant_set ON outbox;
DROP POLICY participant_set ON audit_log;
DROP POLICY participant_set ON requests;
DROP POLICY participant_set ON claims;
DROP POLICY participant_set ON entries;
ALTER TABLE sync_schedule DISABLE ROW LEVEL SECURITY;
ALTER TABLE sync_checks DISABLE ROW LEVEL SECURITY;
ALTER TABLE outbox DISABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log DISABLE ROW LEVEL SECURITY;
ALTER TABLE requests DISABLE ROW LEVEL SECURITY;
ALTER TABLE claims DISABLE ROW LEVEL SECURITY;
ALTER TABLE entries DISABLE ROW LEVEL SECURITY;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM coredict_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM coredict_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM coredict_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM coredict_app;
REVOKE USAGE ON SCHEMA public FROM coredict_app;
