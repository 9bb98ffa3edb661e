-- Core schema: threads, their messages and the turns that produced them.
--
-- Raw JSON values (content, tool_calls, reasoning, reasoning_details, usage,
-- upstream request/response bodies) are stored as TEXT holding the exact bytes
-- received, never re-serialised. A NULL column means "absent"; the JSON text
-- `null` means an explicit null (a tool-call-only assistant message's content).

CREATE TABLE threads (
    id                 TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
    tenant             TEXT NOT NULL DEFAULT 'default',
    created_at         TEXT NOT NULL,               -- RFC 3339, milliseconds, UTC
    updated_at         TEXT NOT NULL,
    metadata           TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
    model              TEXT,
    system             TEXT,
    reasoning          TEXT,                        -- raw JSON object
    reasoning_replay   TEXT,                        -- same_model | all | none
    params             TEXT,                        -- raw JSON object
    message_count      INTEGER NOT NULL DEFAULT 0,  -- also the last seq
    last_message_id    TEXT,
    -- usage totals over completed turns; usage_reports = 0 means "no usage yet"
    usage_reports      INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
    cost               REAL NOT NULL DEFAULT 0,
    -- the one-turn-at-a-time lease: held by a turn until it ends or expires
    lease_turn_id      TEXT,
    lease_expires_at   INTEGER                      -- unix milliseconds
);

CREATE INDEX threads_by_tenant ON threads (tenant, id);

CREATE TABLE messages (
    id                        TEXT PRIMARY KEY NOT NULL,
    thread_id                 TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq                       INTEGER NOT NULL,
    role                      TEXT NOT NULL,
    content                   TEXT,     -- raw JSON (string, array or null)
    name                      TEXT,
    tool_calls                TEXT,     -- raw JSON
    tool_call_id              TEXT,
    reasoning                 TEXT,     -- raw JSON string literal
    reasoning_details         TEXT,     -- raw JSON, byte for byte
    reasoning_details_sha256  TEXT,     -- hex
    turn_id                   TEXT,
    created_at                TEXT NOT NULL,
    model                     TEXT,     -- as reported (upstream's slug) or as imported
    requested_model           TEXT,     -- as requested: what reasoning replay compares
    provider                  TEXT,
    generation_id             TEXT,
    finish_reason             TEXT,
    native_finish_reason      TEXT,
    usage                     TEXT,     -- raw JSON
    UNIQUE (thread_id, seq)
);

CREATE TABLE turns (
    id                     TEXT PRIMARY KEY NOT NULL,
    thread_id              TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    status                 TEXT NOT NULL,   -- in_progress | completed | failed | interrupted
    input_message_ids      TEXT NOT NULL,   -- JSON array
    output_message_id      TEXT,
    model                  TEXT NOT NULL,   -- as requested
    created_at             TEXT NOT NULL,
    completed_at           TEXT,
    latency_ms             INTEGER,
    usage                  TEXT,            -- raw JSON
    generation_id          TEXT,
    error                  TEXT,            -- JSON error object
    idempotency_key        TEXT,
    request_sha256         TEXT,
    -- audit record of the upstream exchange
    upstream_request       TEXT,            -- exact body sent
    upstream_response      TEXT,            -- exact body received
    upstream_response_json INTEGER NOT NULL DEFAULT 0, -- 1 when the body is valid JSON
    upstream_status        INTEGER,
    upstream_attempts      INTEGER NOT NULL DEFAULT 0,
    upstream_started_at    TEXT,
    upstream_finished_at   TEXT
);

CREATE INDEX turns_by_thread ON turns (thread_id, id);
CREATE INDEX turns_in_progress ON turns (status) WHERE status = 'in_progress';
CREATE UNIQUE INDEX turns_idempotency ON turns (thread_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
