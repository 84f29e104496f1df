-- +goose Up
-- The random part of the order's payment idempotency key, not shown with
-- the order: "order-" + id alone could be named, and so taken first, by
-- anyone who saw the id. '' for orders created before; they keep
-- "order-" + id. Versions before this one charge and cancel under
-- "order-" + id whatever this column holds: do not run them beside this
-- one, nor roll back past it, while orders are in flight (one could
-- charge an order twice, or cancel the wrong key).
ALTER TABLE orders ADD COLUMN charge_secret TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE orders DROP COLUMN charge_secret;
