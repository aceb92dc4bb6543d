-- App Migration Platform state (package migration). AMP events arrive duplicated and in any
-- order; this state is what makes the worker's behaviour independent of that order: an
-- upload that arrives before listener-triggered is parked here and queued, under the
-- transfer row's lock, when listener-triggered is recorded.
--
-- Raw JSON (event bodies, migration details, error details) is kept in `json` columns, not
-- `jsonb`: json stores the text as received (jsonb rejects \u0000 and lone surrogates, which
-- would make an event impossible to record and its task retry forever). Cast to jsonb to
-- query. No column holds a secret: AMP events carry none.
--
-- client_key is the tenant whose JWT authenticated the events (tenants.client_key); there is
-- deliberately no foreign key, so that migration state never blocks tenant maintenance.

-- One row per AMP transfer, created by the first event of a known type that names it.
CREATE TABLE migration_transfers (
    transfer_id       text PRIMARY KEY,
    client_key        text NOT NULL,
    migration_id      text NOT NULL DEFAULT '',
    migration_details json NOT NULL,
    -- waiting: no listener-triggered yet (uploads are parked); ready: imports run;
    -- cancelled / failed / succeeded: final, later uploads are skipped.
    state             text NOT NULL DEFAULT 'waiting'
        CHECK (state IN ('waiting', 'ready', 'cancelled', 'succeeded', 'failed')),
    -- The status this service decided to settle the transfer with; NULL while it is open.
    settle_status     text CHECK (settle_status IN ('SUCCESS', 'INCOMPLETE', 'FAILED')),
    -- When the product was known to be settled: our settle call was accepted ('reported'),
    -- or the product answered that the transfer was already settled ('already_settled').
    -- settle_status set and settled_at NULL = a settle call is still owed (retried).
    settled_at        timestamptz,
    settle_result     text CHECK (settle_result IN ('reported', 'already_settled')),
    settle_error      text,
    -- Highest IN_PROGRESS percent reported: the product ignores lower values, so only a
    -- higher one is ever sent.
    last_percent      integer NOT NULL DEFAULT 0 CHECK (last_percent BETWEEN 0 AND 100),
    error_details     json,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    ready_at          timestamptz,
    finished_at       timestamptz,
    CONSTRAINT migration_transfers_settled_has_status CHECK (settled_at IS NULL OR settle_status IS NOT NULL OR settle_result = 'already_settled')
);

CREATE INDEX migration_transfers_client_key_idx ON migration_transfers (client_key, created_at DESC);
-- Transfers that still owe a settle call, for operators and sweeps.
CREATE INDEX migration_transfers_settle_pending_idx ON migration_transfers (transfer_id)
    WHERE settle_status IS NOT NULL AND settled_at IS NULL;

-- One row per uploaded file (s3Key) of a transfer; app-data-uploaded is idempotent per s3Key.
CREATE TABLE migration_uploads (
    transfer_id text NOT NULL REFERENCES migration_transfers (transfer_id) ON DELETE CASCADE,
    s3_key      text NOT NULL,
    label       text NOT NULL DEFAULT '',
    -- parked: waiting for listener-triggered; queued: an import task is (to be) scheduled;
    -- importing: an import is running or was interrupted; imported / skipped: final.
    state       text NOT NULL
        CHECK (state IN ('parked', 'queued', 'importing', 'imported', 'skipped')),
    size_bytes  bigint,
    sha256      text,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    -- An import in progress holds a lease that its worker renews while it streams; another
    -- worker may take the upload over only once the lease has expired (the holder died).
    lease_token text,
    lease_until timestamptz,
    skip_reason text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    imported_at timestamptz,
    PRIMARY KEY (transfer_id, s3_key),
    CONSTRAINT migration_uploads_imported_has_digest
        CHECK (state <> 'imported' OR (size_bytes IS NOT NULL AND sha256 IS NOT NULL AND imported_at IS NOT NULL))
);

CREATE INDEX migration_uploads_open_idx ON migration_uploads (transfer_id, state)
    WHERE state IN ('parked', 'queued', 'importing');

-- What the bundled reference importer (migration.RecordingImporter) imported: one row per
-- s3Key of a transfer, written with ON CONFLICT DO NOTHING so that a re-run after a crash
-- between the import and the upload's "imported" mark does not record it twice.
CREATE TABLE migration_imported_data (
    transfer_id text NOT NULL,
    s3_key      text NOT NULL,
    client_key  text NOT NULL,
    label       text NOT NULL DEFAULT '',
    size_bytes  bigint NOT NULL,
    sha256      text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer_id, s3_key)
);

-- Every AMP event the worker processed, known type or not, so operators can see what the
-- platform sends (new event types included). One row per dedupe key and tenant; a
-- re-delivery that reaches the worker again increments deliveries.
CREATE TABLE migration_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_key       text NOT NULL,
    dedupe_key       text NOT NULL,
    event_type       text NOT NULL,
    transfer_id      text NOT NULL,
    message_id       text NOT NULL DEFAULT '',
    s3_key           text NOT NULL DEFAULT '',
    known            boolean NOT NULL,
    -- handled: applied to its transfer; unknown: type not known, only recorded; rejected:
    -- not applied (the transfer belongs to another tenant). 'received' exists only inside
    -- the transaction that records and applies the event.
    outcome          text NOT NULL DEFAULT 'received'
        CHECK (outcome IN ('received', 'handled', 'unknown', 'rejected')),
    deliveries       integer NOT NULL DEFAULT 1,
    raw              json NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_received_at timestamptz NOT NULL DEFAULT now(),
    handled_at       timestamptz,
    UNIQUE (client_key, dedupe_key)
);

CREATE INDEX migration_events_transfer_idx ON migration_events (transfer_id, received_at);
CREATE INDEX migration_events_unknown_idx ON migration_events (received_at) WHERE NOT known;
