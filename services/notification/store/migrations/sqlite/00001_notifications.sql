-- +goose Up
-- Times are unix microseconds (portable between SQLite and PostgreSQL).

-- One row per message to a user. event_id is unique: an event makes at most
-- one notification, whatever the inbox says. ack_time is NULL until the
-- user's client acknowledges the notification.
CREATE TABLE notifications (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    subject_id  TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    create_time BIGINT  NOT NULL,
    ack_time    BIGINT
);
CREATE UNIQUE INDEX notifications_event_id ON notifications (event_id);
-- ListNotifications: keyset pagination by (create_time, id) within a user.
CREATE INDEX notifications_user_time ON notifications (user_id, create_time, id);
-- Subscribe: a user's unacknowledged notifications, oldest first. Partial,
-- so acknowledged history does not slow it down.
CREATE INDEX notifications_unacked ON notifications (user_id, create_time, id) WHERE ack_time IS NULL;

-- The audit log: every consumed event, one row per event id. payload is the
-- event's protobuf binary. The log is append-only: the store only inserts,
-- and the triggers below refuse any UPDATE or DELETE.
CREATE TABLE audit_events (
    event_id     TEXT    PRIMARY KEY,
    type         TEXT    NOT NULL,
    aggregate_id TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    trace_id     TEXT    NOT NULL,
    occur_time   BIGINT  NOT NULL,
    record_time  BIGINT  NOT NULL,
    payload      BLOB    NOT NULL
);
-- ListAuditEvents: keyset pagination by (record_time, event_id) within an aggregate.
CREATE INDEX audit_events_aggregate ON audit_events (aggregate_id, record_time, event_id);
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE audit_events;
DROP TABLE notifications;
