-- +goose Up
-- A cancelled key whose void at the provider is PENDING: recorded before
-- the provider is asked (and, for a capture that lost the race to the
-- cancel, in the transaction that refuses to record it), DONE once the
-- provider voided the key, unless the key was marked again since
-- (void_marks counts the marks). A void that failed, or a process that
-- stopped first, leaves it to the service's retries, which have asked
-- void_attempts times since void_since, next at void_next_attempt_time
-- (unix microseconds).
ALTER TABLE cancelled_charges ADD COLUMN void_status TEXT NOT NULL DEFAULT 'DONE' CHECK (void_status IN ('PENDING', 'DONE'));
ALTER TABLE cancelled_charges ADD COLUMN void_marks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cancelled_charges ADD COLUMN void_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cancelled_charges ADD COLUMN void_since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cancelled_charges ADD COLUMN void_next_attempt_time BIGINT NOT NULL DEFAULT 0;

-- The pending voids in the order they are due, for the service's retries.
CREATE INDEX cancelled_charges_void_pending ON cancelled_charges (void_next_attempt_time, idempotency_key) WHERE void_status = 'PENDING';

-- +goose Down
DROP INDEX cancelled_charges_void_pending;
ALTER TABLE cancelled_charges DROP COLUMN void_next_attempt_time;
ALTER TABLE cancelled_charges DROP COLUMN void_since;
ALTER TABLE cancelled_charges DROP COLUMN void_attempts;
ALTER TABLE cancelled_charges DROP COLUMN void_marks;
ALTER TABLE cancelled_charges DROP COLUMN void_status;
