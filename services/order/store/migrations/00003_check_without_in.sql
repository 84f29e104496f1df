-- +goose Up
-- The status and step CHECKs become chains of equalities. SQLite evaluates
-- a CHECK's `x IN ('A', 'B', …)` by building a temporary b-tree of the list
-- every time a row is written, about 5 µs per INSERT or UPDATE here, and
-- every saga step writes the order. The set of values allowed is unchanged.
-- As in 00002 both tables are rebuilt on both dialects (SQLite cannot alter
-- a CHECK); the new tables get names never used before, because PostgreSQL
-- keeps an index's name through a table's rename (the tables renamed in
-- 00002 still own orders_new_pkey).
CREATE TABLE orders_v3 (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,
    payment_token     TEXT NOT NULL,
    request_id        TEXT NOT NULL DEFAULT '',
    currency          TEXT NOT NULL DEFAULT '',
    total_units       BIGINT NOT NULL DEFAULT 0 CHECK (total_units >= 0),
    status            TEXT NOT NULL CHECK (status = 'PENDING' OR status = 'CONFIRMED' OR status = 'CANCELLED'
                                           OR status = 'REJECTED'),
    step              TEXT NOT NULL CHECK (step = 'CHECK_USER' OR step = 'PRICE' OR step = 'RESERVE' OR step = 'CHARGE'
                                           OR step = 'COMMIT' OR step = 'REFUND' OR step = 'RELEASE' OR step = 'DONE'),
    failed_step       TEXT NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_time BIGINT NOT NULL DEFAULT 0,
    step_deadline     BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT NOT NULL DEFAULT '',
    payment_id        TEXT NOT NULL DEFAULT '',
    failure_reason    TEXT NOT NULL DEFAULT '',
    version           BIGINT NOT NULL DEFAULT 1,
    create_time       BIGINT NOT NULL,
    update_time       BIGINT NOT NULL,
    CHECK ((status = 'PENDING') = (step <> 'DONE'))
);
CREATE TABLE order_items_v3 (
    order_id          TEXT NOT NULL REFERENCES orders_v3 (id) ON DELETE CASCADE,
    line              INTEGER NOT NULL,
    sku               TEXT NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_units        BIGINT NOT NULL DEFAULT 0 CHECK (unit_units >= 0),
    expected_currency TEXT NOT NULL DEFAULT '',
    expected_units    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line)
);
INSERT INTO orders_v3 SELECT id, user_id, idempotency_key, fingerprint, payment_token, request_id, currency, total_units,
        status, step, failed_step, attempts, next_attempt_time, step_deadline, last_error, payment_id, failure_reason,
        version, create_time, update_time
    FROM orders;
INSERT INTO order_items_v3 SELECT order_id, line, sku, quantity, unit_units, expected_currency, expected_units
    FROM order_items;
DROP TABLE order_items;
DROP TABLE orders;
-- Renaming orders_v3 also renames the REFERENCES of order_items_v3.
ALTER TABLE orders_v3 RENAME TO orders;
ALTER TABLE order_items_v3 RENAME TO order_items;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
CREATE INDEX orders_user_create_time ON orders (user_id, create_time, id);
CREATE INDEX orders_pending ON orders (next_attempt_time) WHERE status = 'PENDING';

-- +goose Down
-- The same tables with the IN lists of 00002.
CREATE TABLE orders_v2 (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,
    payment_token     TEXT NOT NULL,
    request_id        TEXT NOT NULL DEFAULT '',
    currency          TEXT NOT NULL DEFAULT '',
    total_units       BIGINT NOT NULL DEFAULT 0 CHECK (total_units >= 0),
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'REJECTED')),
    step              TEXT NOT NULL CHECK (step IN ('CHECK_USER', 'PRICE', 'RESERVE', 'CHARGE', 'COMMIT', 'REFUND', 'RELEASE', 'DONE')),
    failed_step       TEXT NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_time BIGINT NOT NULL DEFAULT 0,
    step_deadline     BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT NOT NULL DEFAULT '',
    payment_id        TEXT NOT NULL DEFAULT '',
    failure_reason    TEXT NOT NULL DEFAULT '',
    version           BIGINT NOT NULL DEFAULT 1,
    create_time       BIGINT NOT NULL,
    update_time       BIGINT NOT NULL,
    CHECK ((status = 'PENDING') = (step <> 'DONE'))
);
CREATE TABLE order_items_v2 (
    order_id          TEXT NOT NULL REFERENCES orders_v2 (id) ON DELETE CASCADE,
    line              INTEGER NOT NULL,
    sku               TEXT NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_units        BIGINT NOT NULL DEFAULT 0 CHECK (unit_units >= 0),
    expected_currency TEXT NOT NULL DEFAULT '',
    expected_units    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line)
);
INSERT INTO orders_v2 SELECT id, user_id, idempotency_key, fingerprint, payment_token, request_id, currency, total_units,
        status, step, failed_step, attempts, next_attempt_time, step_deadline, last_error, payment_id, failure_reason,
        version, create_time, update_time
    FROM orders;
INSERT INTO order_items_v2 SELECT order_id, line, sku, quantity, unit_units, expected_currency, expected_units
    FROM order_items;
DROP TABLE order_items;
DROP TABLE orders;
ALTER TABLE orders_v2 RENAME TO orders;
ALTER TABLE order_items_v2 RENAME TO order_items;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
CREATE INDEX orders_user_create_time ON orders (user_id, create_time, id);
CREATE INDEX orders_pending ON orders (next_attempt_time) WHERE status = 'PENDING';
