-- A turn's upstream request repeats the previous turn's request up to the end of its
-- messages, so storing every request whole makes a thread's audit records grow with the
-- square of its length. A request may instead be stored as the first
-- `upstream_request_shared` bytes of an earlier turn's whole request (`upstream_request_base`,
-- a turn of the same thread) followed by `upstream_request`. Reads put the whole request
-- back together, byte for byte; chains are kept short (storage/audit.rs).
ALTER TABLE turns ADD COLUMN upstream_request_base TEXT;
ALTER TABLE turns ADD COLUMN upstream_request_shared INTEGER;
