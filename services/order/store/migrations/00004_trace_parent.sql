-- +goose Up
-- The W3C traceparent of the call that created the order ('' when it had
-- none), so the saga's calls to other services continue its trace.
ALTER TABLE orders ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE orders DROP COLUMN trace_parent;
