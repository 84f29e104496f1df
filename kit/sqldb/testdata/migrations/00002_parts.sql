-- +goose Up
CREATE TABLE parts (
    id        TEXT PRIMARY KEY,
    widget_id TEXT NOT NULL REFERENCES widgets (id),
    note      TEXT NOT NULL DEFAULT 'what? -- not a placeholder'
);

-- +goose Down
DROP TABLE parts;
