-- +goose Up
-- The purge of imports kept longer than the service's retention reads
-- them oldest first.
CREATE INDEX stock_imports_create_time ON stock_imports (create_time);

-- +goose Down
DROP INDEX stock_imports_create_time;
