-- +goose Up
-- One row per charge, captured or declined. Money is BIGINT minor units plus
-- a TEXT currency; times are BIGINT unix microseconds, portable across
-- SQLite and PostgreSQL.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount_units    BIGINT NOT NULL CHECK (amount_units > 0),
    -- The CHECK is the last line of defence against over-refunding.
    refunded_units  BIGINT NOT NULL DEFAULT 0 CHECK (refunded_units >= 0 AND refunded_units <= amount_units),
    status          TEXT NOT NULL,
    decline_reason  TEXT NOT NULL DEFAULT '',
    reference       TEXT NOT NULL DEFAULT '',
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL
);

-- A charge's idempotency key is unique: the durable guarantee that a retry,
-- however it races, never charges twice.
CREATE UNIQUE INDEX payments_idempotency_key ON payments (idempotency_key);

-- One row per refund. idempotency_key is '' when the caller gave none.
CREATE TABLE refunds (
    id              TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    units           BIGINT NOT NULL CHECK (units > 0),
    requested_units BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL DEFAULT '',
    create_time     BIGINT NOT NULL
);

CREATE INDEX refunds_payment ON refunds (payment_id);

-- Keyed refunds are unique per payment; keyless ones are not constrained.
CREATE UNIQUE INDEX refunds_payment_idempotency_key ON refunds (payment_id, idempotency_key)
    WHERE idempotency_key <> '';

-- +goose Down
DROP TABLE refunds;
DROP TABLE payments;
