-- The process holding a thread's turn lease ("<pid>:<start time>"), so that a lease left by
-- a process that died can be taken over at once instead of after its expiry.
ALTER TABLE threads ADD COLUMN lease_owner TEXT;
