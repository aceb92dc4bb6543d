-- The event feed (package internal/outbox): every change reported to the vendor
-- (a LifecycleListener, a MigrationListener, or the forwarding to the vendor's
-- backend) is written here in the same transaction as the change itself, so that
-- a change is never made without its event nor reported without having been made.
-- A dispatcher hands each row to a delivery task (retried with the queue's
-- backoff, visible in the monitoring UI) and marks it dispatched. The id orders a
-- tenant's events and is the event's identity across deliveries. data never holds
-- a secret.
CREATE TABLE event_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_key    text NOT NULL,
    type          text NOT NULL,
    transfer_id   text NOT NULL DEFAULT '',
    data          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz
);

CREATE INDEX event_outbox_pending_idx ON event_outbox (id) WHERE dispatched_at IS NULL;
CREATE INDEX event_outbox_dispatched_idx ON event_outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;

-- 'pending': the Importer handed the upload over (ErrImportPending) and its result
-- is reported later through the internal API. An upload imported that way was not
-- read by this service, so its size and SHA-256 may be unknown.
ALTER TABLE migration_uploads DROP CONSTRAINT migration_uploads_state_check;
ALTER TABLE migration_uploads ADD CONSTRAINT migration_uploads_state_check
    CHECK (state IN ('parked', 'queued', 'importing', 'pending', 'imported', 'skipped', 'failed'));
ALTER TABLE migration_uploads DROP CONSTRAINT migration_uploads_imported_has_digest;
ALTER TABLE migration_uploads ADD CONSTRAINT migration_uploads_imported_has_time
    CHECK (state <> 'imported' OR imported_at IS NOT NULL);
