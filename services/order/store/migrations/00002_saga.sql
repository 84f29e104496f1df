-- +goose Up
-- The order saga (issue 3): orders keep the saga's state, are priced by
-- inventory (so the total is unknown until the PRICE step), and end
-- CONFIRMED, CANCELLED or REJECTED. The status CHECK changes, which SQLite
-- can only do by rebuilding the table, so both tables are rebuilt the same
-- way on both dialects: create under a new name, copy, drop the old, rename
-- the new (in that order so that PostgreSQL's implicit index names, like
-- orders_pkey, never clash).

-- currency is '' and total_units 0 until the order is priced. step is the
-- saga step to run next (DONE once the status is terminal); failed_step the
-- forward step whose failure started compensation ('' otherwise);
-- next_attempt_time when the step may run next; step_deadline when a forward
-- step is given up (0 for compensation steps); version counts stored changes,
-- so that a change computed from a stale read is refused.
CREATE TABLE orders_new (
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

-- The lines of an order, in request order (line counts from 0). unit_units
-- is inventory's price, 0 until priced; expected_currency and
-- expected_units are the price the client sent ('' and 0 when none).
CREATE TABLE order_items_new (
    order_id          TEXT NOT NULL REFERENCES orders_new (id) ON DELETE CASCADE,
    line              INTEGER NOT NULL,
    sku               TEXT NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_units        BIGINT NOT NULL DEFAULT 0 CHECK (unit_units >= 0),
    expected_currency TEXT NOT NULL DEFAULT '',
    expected_units    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line)
);

-- Settled orders keep their outcome (PAID is CONFIRMED, PAYMENT_FAILED is
-- CANCELLED). An order left PENDING before the saga may or may not have
-- been charged, and its payment token was not kept: it is cancelled, which
-- refunds whatever was charged under its key.
INSERT INTO orders_new (id, user_id, idempotency_key, fingerprint, payment_token, currency, total_units,
        status, step, failed_step, failure_reason, payment_id, create_time, update_time)
    SELECT id, user_id, idempotency_key, fingerprint, '', currency, total_units,
        CASE status WHEN 'PAID' THEN 'CONFIRMED' WHEN 'PAYMENT_FAILED' THEN 'CANCELLED' ELSE 'PENDING' END,
        CASE status WHEN 'PENDING' THEN 'REFUND' ELSE 'DONE' END,
        CASE status WHEN 'PENDING' THEN 'CHARGE' ELSE '' END,
        CASE status WHEN 'PENDING' THEN 'LEGACY_PENDING' ELSE failure_reason END,
        payment_id, create_time, update_time
    FROM orders;
INSERT INTO order_items_new (order_id, line, sku, quantity, unit_units)
    SELECT order_id, line, sku, quantity, unit_units FROM order_items;

DROP TABLE order_items;
DROP TABLE orders;
-- Renaming orders_new also renames the REFERENCES of order_items_new.
ALTER TABLE orders_new RENAME TO orders;
ALTER TABLE order_items_new RENAME TO order_items;

-- The durable half of idempotency: two racing requests with one key cannot
-- both create an order.
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);

-- ListOrders walks one user's orders in (create_time, id) order.
CREATE INDEX orders_user_create_time ON orders (user_id, create_time, id);

-- The saga runner resumes unfinished orders by when they are due.
CREATE INDEX orders_pending ON orders (next_attempt_time) WHERE status = 'PENDING';

-- +goose Down
-- Back to the pre-saga shape. Unpriced orders (total 0) cannot be kept;
-- CANCELLED and REJECTED become PAYMENT_FAILED.
CREATE TABLE orders_old (
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
CREATE TABLE order_items_old (
    order_id   TEXT NOT NULL REFERENCES orders_old (id) ON DELETE CASCADE,
    line       INTEGER NOT NULL,
    sku        TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_units BIGINT NOT NULL CHECK (unit_units >= 0),
    PRIMARY KEY (order_id, line)
);
INSERT INTO orders_old (id, user_id, idempotency_key, fingerprint, currency, total_units, status,
        payment_id, failure_reason, create_time, update_time)
    SELECT id, user_id, idempotency_key, fingerprint, currency, total_units,
        CASE status WHEN 'CONFIRMED' THEN 'PAID' WHEN 'PENDING' THEN 'PENDING' ELSE 'PAYMENT_FAILED' END,
        payment_id, failure_reason, create_time, update_time
    FROM orders WHERE total_units > 0;
INSERT INTO order_items_old (order_id, line, sku, quantity, unit_units)
    SELECT i.order_id, i.line, i.sku, i.quantity, i.unit_units
    FROM order_items i JOIN orders_old o ON o.id = i.order_id;
DROP TABLE order_items;
DROP TABLE orders;
ALTER TABLE orders_old RENAME TO orders;
ALTER TABLE order_items_old RENAME TO order_items;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key);
CREATE INDEX orders_user_create_time ON orders (user_id, create_time, id);
