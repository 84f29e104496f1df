-- +goose Up
CREATE TABLE widgets (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE UNIQUE INDEX widgets_name_key ON widgets (name_key);

-- +goose Down
DROP TABLE widgets;
