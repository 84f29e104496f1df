-- +goose Up
-- Times are unix microseconds (portable between SQLite and PostgreSQL).
-- email is stored as given; email_key is its lower-case form, computed by the
-- domain, and its unique index is what makes concurrent sign-ups with the same
-- address (in any letter case) end with exactly one user.
CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    email       TEXT    NOT NULL,
    email_key   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email_key);
-- Keyset pagination: ORDER BY create_time, id with WHERE (create_time, id) > (?, ?).
CREATE INDEX users_create_time_id ON users (create_time, id);

-- +goose Down
DROP TABLE users;
