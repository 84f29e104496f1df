-- +goose Up
-- events_outbox holds events appended in the same transaction as the state
-- change they report, until the relay has published them to NATS. seq (the
-- rowid) orders them; published_time is NULL while a row is pending.
CREATE TABLE events_outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    subject        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    headers        TEXT    NOT NULL,
    occur_time     BIGINT  NOT NULL,
    published_time BIGINT
);
CREATE INDEX events_outbox_pending ON events_outbox (seq) WHERE published_time IS NULL;
CREATE INDEX events_outbox_published ON events_outbox (published_time) WHERE published_time IS NOT NULL;

-- events_inbox remembers which events each consumer has already applied, so
-- a redelivered event has its effect once.
CREATE TABLE events_inbox (
    consumer       TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    processed_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- +goose Down
DROP TABLE events_inbox;
DROP TABLE events_outbox;
