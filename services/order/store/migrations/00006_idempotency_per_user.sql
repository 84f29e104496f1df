-- +goose Up
-- Idempotency keys are each user's: two users who chose the same key (a
-- counter, say) placed one order and had the other refused as a reused
-- key, which also told the second that someone had used it.
DROP INDEX orders_idempotency_key;
CREATE UNIQUE INDEX orders_user_idempotency_key ON orders (user_id, idempotency_key);

-- +goose Down
-- Fails while two users' orders share a key.
DROP INDEX orders_user_idempotency_key;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
