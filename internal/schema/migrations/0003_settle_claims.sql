-- Settle claims, failed uploads, expired transfers and re-scheduling (package migration).
--
-- A settle call is an HTTP call to the product that may take minutes (it is retried).
-- It used to be made while holding the transfer row's lock, which kept a pool
-- connection busy and made every other task of the transfer wait on the lock holding
-- theirs: enough of them exhaust the pool, and the call itself (which looks the tenant
-- up in Postgres) then waits for a connection forever. Instead a worker claims the
-- settle call in one short statement (settle_claimed_until), commits, makes the call
-- with no lock or transaction open, and records the result and clears the claim in a
-- second short statement. Workers racing to settle one transfer find it claimed (or
-- settled) and leave it; a worker that died mid-call leaves a claim that expires, after
-- which the settle sweep (SettlePending) makes the call again.

ALTER TABLE migration_transfers
    -- Until when a worker owns the settle call; NULL or past = nobody does.
    ADD COLUMN settle_claimed_until timestamptz,
    -- The message sent with the settle status; NULL = the status's default message.
    ADD COLUMN settle_message text;

-- 'expired': the product answered that the transfer is past AMP's 14-day window (400).
-- Like 'already_settled' it is final: no settle call is owed any more.
ALTER TABLE migration_transfers DROP CONSTRAINT migration_transfers_settle_result_check;
ALTER TABLE migration_transfers ADD CONSTRAINT migration_transfers_settle_result_check
    CHECK (settle_result IN ('reported', 'already_settled', 'expired'));

-- 'failed': the import task gave up on the upload (permanent error or retries
-- exhausted); final, and the transfer is failed with it.
ALTER TABLE migration_uploads DROP CONSTRAINT migration_uploads_state_check;
ALTER TABLE migration_uploads ADD CONSTRAINT migration_uploads_state_check
    CHECK (state IN ('parked', 'queued', 'importing', 'imported', 'skipped', 'failed'));

-- How many times the stale-upload sweep (RequeueStale) scheduled the upload again: each
-- time it is a new import task ID, because the previous one may stay taken by an
-- archived or lost task.
ALTER TABLE migration_uploads ADD COLUMN reschedules integer NOT NULL DEFAULT 0;

-- Uploads the stale-upload sweep looks at, oldest first.
CREATE INDEX migration_uploads_stale_idx ON migration_uploads (updated_at)
    WHERE state IN ('queued', 'importing');
