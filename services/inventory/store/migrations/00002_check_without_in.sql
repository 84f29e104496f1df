-- +goose Up
-- The reservation status CHECK becomes a chain of equalities: SQLite
-- evaluates a CHECK's `x IN ('A', 'B', …)` by building a temporary b-tree
-- of the list every time a row is written, and every order writes its
-- reservation twice. The values allowed are unchanged. SQLite cannot alter
-- a CHECK, so the table is rebuilt, with reservation_lines, whose
-- REFERENCES would keep the old table from being dropped.
CREATE TABLE reservations_v2 (
    order_id    TEXT   PRIMARY KEY,
    status      TEXT   NOT NULL CHECK (status = 'RESERVED' OR status = 'COMMITTED' OR status = 'RELEASED'),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE TABLE reservation_lines_v2 (
    order_id TEXT    NOT NULL REFERENCES reservations_v2 (order_id),
    position INTEGER NOT NULL,
    sku      TEXT    NOT NULL REFERENCES products (sku),
    quantity BIGINT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, sku)
);
INSERT INTO reservations_v2 SELECT order_id, status, create_time, update_time FROM reservations;
INSERT INTO reservation_lines_v2 SELECT order_id, position, sku, quantity FROM reservation_lines;
DROP TABLE reservation_lines;
DROP TABLE reservations;
-- Renaming reservations_v2 also renames the REFERENCES of reservation_lines_v2.
ALTER TABLE reservations_v2 RENAME TO reservations;
ALTER TABLE reservation_lines_v2 RENAME TO reservation_lines;

-- +goose Down
CREATE TABLE reservations_v1 (
    order_id    TEXT   PRIMARY KEY,
    status      TEXT   NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE TABLE reservation_lines_v1 (
    order_id TEXT    NOT NULL REFERENCES reservations_v1 (order_id),
    position INTEGER NOT NULL,
    sku      TEXT    NOT NULL REFERENCES products (sku),
    quantity BIGINT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, sku)
);
INSERT INTO reservations_v1 SELECT order_id, status, create_time, update_time FROM reservations;
INSERT INTO reservation_lines_v1 SELECT order_id, position, sku, quantity FROM reservation_lines;
DROP TABLE reservation_lines;
DROP TABLE reservations;
ALTER TABLE reservations_v1 RENAME TO reservations;
ALTER TABLE reservation_lines_v1 RENAME TO reservation_lines;
