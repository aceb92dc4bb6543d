-- Bounds on what a signing tenant can make the worker store in migration_events.
--
-- 'ignored': an event of a tenant that is uninstalled (its secret is kept, so it
-- still verifies): recorded, acknowledged, never acted on.
ALTER TABLE migration_events DROP CONSTRAINT migration_events_outcome_check;
ALTER TABLE migration_events ADD CONSTRAINT migration_events_outcome_check
    CHECK (outcome IN ('received', 'handled', 'unknown', 'rejected', 'ignored'));

-- The events that are stored but not acted on (unknown types, uninstalled
-- tenants) are capped per tenant; this index counts them.
CREATE INDEX migration_events_unacted_idx ON migration_events (client_key)
    WHERE NOT known OR outcome = 'ignored';

-- Retention: the settle sweep deletes events not received for a while.
CREATE INDEX migration_events_last_received_idx ON migration_events (last_received_at);

-- Events acknowledged but not stored because their tenant was over the cap,
-- counted per tenant for operators.
CREATE TABLE migration_event_drops (
    client_key       text PRIMARY KEY,
    dropped          bigint NOT NULL DEFAULT 0,
    first_dropped_at timestamptz NOT NULL DEFAULT now(),
    last_dropped_at  timestamptz NOT NULL DEFAULT now()
);
