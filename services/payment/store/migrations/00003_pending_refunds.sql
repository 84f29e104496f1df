-- +goose Up
-- A refund is recorded PENDING, its amount already counted in the
-- payment's refunded_units (so racing refunds never exceed the charge),
-- before the provider is asked to return the money, and DONE once the
-- provider has: a refund the provider did not confirm (it failed, or the
-- process stopped in between) is asked again, attempts times so far, next
-- at next_attempt_time (unix microseconds), until it does. Refunds made
-- before this migration never reached a provider; they stay DONE.
ALTER TABLE refunds ADD COLUMN status TEXT NOT NULL DEFAULT 'DONE' CHECK (status IN ('PENDING', 'DONE'));
ALTER TABLE refunds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN next_attempt_time BIGINT NOT NULL DEFAULT 0;

-- What of refunded_units the provider has not yet confirmed, so a payment
-- reads in one row.
ALTER TABLE payments ADD COLUMN refund_pending_units BIGINT NOT NULL DEFAULT 0 CHECK (refund_pending_units >= 0);

-- The pending refunds in the order they are due, for the service's retries.
CREATE INDEX refunds_pending ON refunds (next_attempt_time, id) WHERE status = 'PENDING';

-- +goose Down
DROP INDEX refunds_pending;
ALTER TABLE payments DROP COLUMN refund_pending_units;
ALTER TABLE refunds DROP COLUMN next_attempt_time;
ALTER TABLE refunds DROP COLUMN attempts;
ALTER TABLE refunds DROP COLUMN status;
