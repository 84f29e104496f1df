-- +goose NO TRANSACTION
-- +goose Up
-- events_inbox_processed lets the inbox purge (StartInboxPurge) find the
-- oldest rows without reading the whole table. Built CONCURRENTLY, outside
-- a transaction: an inbox that was never purged before can be large, and
-- a plain CREATE INDEX would hold up the consumers' inserts while it ran.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_inbox_processed ON events_inbox (processed_time);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS events_inbox_processed;
