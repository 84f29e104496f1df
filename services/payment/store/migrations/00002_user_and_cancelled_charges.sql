-- +goose Up
-- The customer a payment charged, as the caller said ('' when not given),
-- so events about the payment can reach them.
ALTER TABLE payments ADD COLUMN user_id TEXT NOT NULL DEFAULT '';

-- Idempotency keys cancelled (CancelCharge) before any charge was made with
-- them: a later Charge with one is refused. A key is in payments or here,
-- never both.
CREATE TABLE cancelled_charges (
    idempotency_key TEXT PRIMARY KEY,
    create_time     BIGINT NOT NULL
);

-- +goose Down
DROP TABLE cancelled_charges;
ALTER TABLE payments DROP COLUMN user_id;
