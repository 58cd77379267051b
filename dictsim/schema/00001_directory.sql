-- +goose Up
-- The simulated central directory (BCB's DICT): every participant's keys.
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
    created_at        timestamptz NOT NULL,
    key_owned_since   timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    request_id        uuid        NOT NULL,
    -- The CID as hex and as four big-endian signed 64-bit words: a VSync is
    -- a bit_xor aggregate per participant and key type.
    cid               text        NOT NULL CHECK (cid ~ '^[0-9a-f]{64}$'),
    cid_w0            bigint      NOT NULL,
    cid_w1            bigint      NOT NULL,
    cid_w2            bigint      NOT NULL,
    cid_w3            bigint      NOT NULL,
    CONSTRAINT entries_tax_id_key CHECK (key_type NOT IN ('CPF', 'CNPJ') OR key = owner_tax_id)
);

CREATE INDEX entries_account ON entries (participant, branch, account_number, account_type);
CREATE INDEX entries_vsync ON entries (participant, key_type) INCLUDE (cid_w0, cid_w1, cid_w2, cid_w3);

-- Claims. claim holds the dict.v1.Claim as last answered (kept in step with
-- the columns, which are what the rules query); donor_entry the donor's
-- dict.v1.Entry while the claim runs, so a cancel after CONFIRMED can put it back.
CREATE TABLE claims (
    id                    uuid        PRIMARY KEY,
    claim_type            text        NOT NULL CHECK (claim_type IN ('PORTABILITY', 'OWNERSHIP')),
    status                text        NOT NULL CHECK (status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED', 'CANCELLED', 'COMPLETED')),
    key                   text        NOT NULL,
    claimer_participant   text        NOT NULL,
    donor_participant     text        NOT NULL,
    created_at            timestamptz NOT NULL,
    resolution_period_end timestamptz NOT NULL,
    completion_period_end timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    claim                 bytea       NOT NULL,
    donor_entry           bytea       NOT NULL
);

-- BCB: at most one open claim per key.
CREATE UNIQUE INDEX claims_one_open_per_key ON claims (key)
    WHERE status IN ('OPEN', 'WAITING_RESOLUTION', 'CONFIRMED');

-- Every request handled, by correlation id: a redelivered request gets the
-- stored response (and notice) again, without being applied twice.
CREATE TABLE processed_requests (
    correlation_id text        PRIMARY KEY,
    participant    text        NOT NULL,
    operation      text        NOT NULL,
    reply_to       text        NOT NULL,
    partition_key  text        NOT NULL,
    response       bytea       NOT NULL,
    notice_topic   text        NOT NULL DEFAULT '',
    notice         bytea,
    processed_at   timestamptz NOT NULL
);

-- RequestId idempotency: the first successful answer to a participant's
-- write, with a fingerprint of its data.
CREATE TABLE request_ids (
    participant  text        NOT NULL,
    request_id   text        NOT NULL,
    operation    text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    response     bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (participant, request_id)
);

-- Participants: where their notices go (learned from the reply_to of their
-- writes, or set by configuration, which learning never overrides).
CREATE TABLE participants (
    ispb         text        PRIMARY KEY CHECK (ispb ~ '^[0-9]{8}$'),
    notice_topic text        NOT NULL,
    configured   boolean     NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL
);

-- +goose Down
DROP TABLE participants;
DROP TABLE request_ids;
DROP TABLE processed_requests;
DROP TABLE claims;
DROP TABLE entries;
