-- Service keys. Only a SHA-256 of each key is stored; the key itself is shown once.
-- A key is never deleted, only revoked: its row also records that keys exist, which keeps
-- the service out of open mode for good.
CREATE TABLE service_keys (
    id            TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
    name          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    key_sha256    TEXT NOT NULL UNIQUE,        -- hex
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);
