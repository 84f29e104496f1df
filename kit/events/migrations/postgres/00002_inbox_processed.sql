-- +goose NO TRANSACTION
-- +goose Up
-- events_inbox_processed lets the inbox purge (StartInboxPurge) find the
-- oldest rows without reading the whole table. Built CONCURRENTLY, outside
-- a transaction: an inbox that was never purged before can be large, and
-- a plain CREATE INDEX would hold up the consumers' inserts while it ran.
--
-- A concurrent build that was interrupted (the process killed, the
-- statement cancelled) leaves the index behind, INVALID: never used by a
-- query, still kept up by every insert. IF NOT EXISTS would then take it
-- for built and goose record this migration as done, so an invalid one is
-- dropped first. Plainly, not CONCURRENTLY, which no DO block can run:
-- dropping an index nothing reads takes a moment's lock.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index
               WHERE indexrelid = to_regclass('events_inbox_processed') AND NOT indisvalid) THEN
        DROP INDEX events_inbox_processed;
    END IF;
END
$$;
-- +goose StatementEnd
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_inbox_processed ON events_inbox (processed_time);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS events_inbox_processed;
