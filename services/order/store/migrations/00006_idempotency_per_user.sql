-- +goose Up
-- Idempotency keys are each user's: two users who chose the same key (a
-- counter, say) placed one order and had the other refused as a reused
-- key, which also told the second that someone had used it. Versions
-- before this one look a key up across users: do not run them beside this
-- one, since once two users share a key a repeat could be answered with
-- the other user's order.
DROP INDEX orders_idempotency_key;
CREATE UNIQUE INDEX orders_user_idempotency_key ON orders (user_id, idempotency_key);

-- +goose Down
-- Fails while two users' orders share a key.
DROP INDEX orders_user_idempotency_key;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
