-- +goose Up
-- One row per order. Money is BIGINT minor units plus a TEXT currency (one
-- currency per order); times are BIGINT unix microseconds, portable across
-- SQLite and PostgreSQL.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    currency        TEXT NOT NULL,
    total_units     BIGINT NOT NULL CHECK (total_units > 0),
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'PAID', 'PAYMENT_FAILED')),
    payment_id      TEXT NOT NULL DEFAULT '',
    failure_reason  TEXT NOT NULL DEFAULT '',
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL
);

-- The durable half of idempotency: two racing requests with one key cannot
-- both create an order.
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);

-- ListOrders walks one user's orders in (create_time, id) order.
CREATE INDEX orders_user_create_time ON orders (user_id, create_time, id);

-- The lines of an order, in request order (line counts from 0).
CREATE TABLE order_items (
    order_id   TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line       INTEGER NOT NULL,
    sku        TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_units BIGINT NOT NULL CHECK (unit_units >= 0),
    PRIMARY KEY (order_id, line)
);

-- +goose Down
DROP TABLE order_items;
DROP TABLE orders;
