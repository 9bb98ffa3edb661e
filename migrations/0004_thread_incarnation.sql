-- A random token drawn each time a thread row is inserted (created or imported). It is
-- never exported, so a thread deleted and imported again under the same id gets a new one:
-- the in-memory context cache compares it to know the messages it holds are still this
-- thread's, even when another process did the deleting and importing.
ALTER TABLE threads ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE threads SET incarnation = lower(hex(randomblob(16)));
