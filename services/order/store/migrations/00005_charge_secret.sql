-- +goose Up
-- The random part of the order's payment idempotency key, never shown:
-- "order-" + id alone could be named, and so taken first, by anyone who
-- saw the id. '' for orders created before; they keep "order-" + id.
ALTER TABLE orders ADD COLUMN charge_secret TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE orders DROP COLUMN charge_secret;
