-- +goose Up
-- Entries: this PSP's own keys (one row per live key; history is in audit_log).
CREATE TABLE entries (
    key               text        PRIMARY KEY,
    key_type          text        NOT NULL CHECK (key_type IN ('CPF', 'CNPJ', 'PHONE', 'EMAIL', 'EVP')),
    participant       text        NOT NULL CHECK (participant ~ '^[0-9]{8}$'),
    branch            text        NOT NULL DEFAULT '' CHECK (branch ~ '^[0-9]{0,4}$'),
    account_number    text        NOT NULL CHECK (account_number ~ '^[0-9]{1,20}$'),
    account_type      text        NOT NULL CHECK (account_type IN ('CACC', 'SVGS', 'SLRY', 'TRAN')),
    account_opened_at timestamptz NOT NULL,
    owner_type        text        NOT NULL CHECK (owner_type IN ('NATURAL_PERSON', 'LEGAL_PERSON')),
    owner_tax_id      text        NOT NULL,
    owner_name        text        NOT NULL CHECK (char_length(owner_name) BETWEEN 1 AND 150),
    owner_trade_name  text        NOT NULL DEFAULT '' CHECK (char_length(owner_trade_name) <= 100),
    status            text        NOT NULL CHECK (status IN ('PENDING', 'ACTIVE', 'LOCKED_BY_CLAIM', 'FAILED')),
    created_at        timestamptz NOT NULL,
    key_owned_since   timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    request_id        uuid        NOT NULL,
    -- The CID as lowercase hex and as four big-endian signed 64-bit words, so
    -- that a VSync is a bit_xor aggregate with no row every write touches.
    cid               text        NOT NULL CHECK (cid ~ '^[0-9a-f]{64}$'),
    cid_w0            bigint      NOT NULL,
    cid_w1            bigint      NOT NULL,
    cid_w2            bigint      NOT NULL,
    cid_w3            bigint      NOT NULL,
    -- BCB: a CPF or CNPJ key is its owner's own tax id.
    CONSTRAINT entries_tax_id_key CHECK (key_type NOT IN ('CPF', 'CNPJ') OR key = owner_tax_id),
    CONSTRAINT entries_cpf_natural CHECK (key_type <> 'CPF' OR owner_type = 'NATURAL_PERSON'),
    CONSTRAINT entries_cnpj_legal CHECK (key_type <> 'CNPJ' OR owner_type = 'LEGAL_PERSON'),
    CONSTRAINT entries_owner_tax_id CHECK (
        (owner_type = 'NATURAL_PERSON' AND owner_tax_id ~ '^[0-9]{11}$' AND owner_trade_name = '') OR
        (owner_type = 'LEGAL_PERSON' AND owner_tax_id ~ '^[0-9A-Z]{12}[0-9]{2}$'))
);

CREATE INDEX entries_account ON entries (participant, branch, account_number, account_type, key);
CREATE INDEX entries_owner ON entries (participant, owner_tax_id, key);
CREATE INDEX entries_vsync ON entries (participant, key_type) INCLUDE (cid_w0, cid_w1, cid_w2, cid_w3);

-- Claims over keys. Only the columns the key use cases need to respect
-- (EntryLockedByClaim) are used before the directory exists.
CREATE TABLE claims (
    id                    uuid        PRIMARY KEY,
    claim_type            text        NOT NULL CHECK (claim_type IN ('PORTABILITY', 'OWNERSHIP')),
    status                text        NOT NULL CHECK (status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED', 'CANCELLED', 'COMPLETED')),
    key_type              text        NOT NULL,
    key                   text        NOT NULL,
    claimer_participant   text        NOT NULL,
    donor_participant     text        NOT NULL,
    resolution_period_end timestamptz NOT NULL,
    completion_period_end timestamptz NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

-- BCB: at most one open claim per key.
CREATE UNIQUE INDEX claims_one_open_per_key ON claims (key)
    WHERE status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- RequestId idempotency: the first answer to a request, by id.
CREATE TABLE requests (
    request_id  uuid        PRIMARY KEY,
    participant text        NOT NULL,
    operation   text        NOT NULL,
    fingerprint bytea       NOT NULL,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per change, written in the change's transaction.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    participant text        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    key         text        NOT NULL,
    request_id  uuid,
    reason      text        NOT NULL DEFAULT '',
    before      jsonb,
    after       jsonb
);

CREATE INDEX audit_log_key ON audit_log (key, at);

-- Transactional outbox: events written in the change's transaction and
-- published by the relay (eventbus) after commit.
CREATE TABLE outbox (
    id             uuid        PRIMARY KEY,
    created_at     timestamptz NOT NULL,
    topic          text        NOT NULL,
    partition_key  text        NOT NULL,
    event_type     text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    participant    text        NOT NULL,
    content_type   text        NOT NULL,
    payload        bytea       NOT NULL,
    published_at   timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- Results of VSync checks against the directory, one row per check.
CREATE TABLE sync_checks (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant text        NOT NULL,
    key_type    text        NOT NULL,
    checked_at  timestamptz NOT NULL,
    local_vsync text        NOT NULL,
    dict_vsync  text        NOT NULL,
    result      text        NOT NULL CHECK (result IN ('MATCH', 'MISMATCH'))
);

CREATE INDEX sync_checks_latest ON sync_checks (participant, key_type, checked_at DESC);

-- +goose Down
DROP TABLE sync_checks;
DROP TABLE outbox;
DROP TABLE audit_log;
DROP TABLE requests;
DROP TABLE claims;
DROP TABLE entries;
