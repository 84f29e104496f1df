-- +goose Up
-- events_inbox_processed lets the inbox purge (StartInboxPurge) find the
-- oldest rows without reading the whole table.
CREATE INDEX events_inbox_processed ON events_inbox (processed_time);

-- +goose Down
DROP INDEX events_inbox_processed;
