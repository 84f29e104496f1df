-- +goose Up
-- Money is BIGINT minor units plus a TEXT currency; times are BIGINT unix
-- microseconds, portable across SQLite and PostgreSQL.
--
-- available and reserved are the stock counts. The service never lets them
-- go below zero (every decrement is a guarded UPDATE … WHERE available >= ?);
-- the CHECKs make the database refuse it too, whatever goes wrong above it.
CREATE TABLE products (
    sku         TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    currency    TEXT   NOT NULL,
    price_units BIGINT NOT NULL CHECK (price_units > 0),
    available   BIGINT NOT NULL CHECK (available >= 0),
    reserved    BIGINT NOT NULL CHECK (reserved >= 0),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

-- One row per order that reserved stock or was released. The primary key is
-- what makes ReserveStock idempotent: racing reservations for one order
-- insert one row, and the loser reads the winner's.
CREATE TABLE reservations (
    order_id    TEXT   PRIMARY KEY,
    status      TEXT   NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

-- The lines of a reservation, in the order they were asked for (position).
-- A released-before-reserved order (a tombstone) has none.
CREATE TABLE reservation_lines (
    order_id TEXT    NOT NULL REFERENCES reservations (order_id),
    position INTEGER NOT NULL,
    sku      TEXT    NOT NULL REFERENCES products (sku),
    quantity BIGINT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, sku)
);

-- +goose Down
DROP TABLE reservation_lines;
DROP TABLE reservations;
DROP TABLE products;
