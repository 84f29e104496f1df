-- +goose Up
-- The imports applied under a client's import id, so that one sent again
-- (its answer lost) applies nothing and gets the first one's summary.
-- fingerprint is a digest of the import's records; the summary's counts
-- are columns and its rejections (at most 1,000) a JSON array.
CREATE TABLE stock_imports (
    import_id   TEXT   PRIMARY KEY,
    fingerprint TEXT   NOT NULL,
    received    BIGINT NOT NULL,
    applied     BIGINT NOT NULL,
    rejected    BIGINT NOT NULL,
    rejections  TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

-- +goose Down
DROP TABLE stock_imports;
