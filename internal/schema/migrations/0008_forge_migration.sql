-- Forge migrations (package migration): the Forge platform settles a transfer itself and
-- wants every event message acknowledged with a status (SUCCESS or FAILED) within 15
-- minutes. One row per message of a transfer that owes a status: triggered:listener
-- (SUCCESS once handled) and uploaded:app_data (SUCCESS once its upload is imported,
-- FAILED once it is skipped or failed or its transfer closed without it). The status is
-- derived from the transfer's and the upload's state when it is sent, so nothing records
-- it twice; acked_at set means the platform accepted it (or answered that the transfer is
-- settled). No column holds a secret: the system token lives with the tenant.
--
-- Version 0007 is the Forge tenant table; this migration does not depend on it.
CREATE TABLE migration_forge_messages (
    transfer_id       text NOT NULL REFERENCES migration_transfers (transfer_id) ON DELETE CASCADE,
    message_id        text NOT NULL,
    -- The machine's event type the message came with.
    kind              text NOT NULL CHECK (kind IN ('listener-triggered', 'app-data-uploaded')),
    -- The upload of an app-data-uploaded message; '' otherwise.
    s3_key            text NOT NULL DEFAULT '',
    acked_status      text CHECK (acked_status IN ('SUCCESS', 'FAILED')),
    -- reported: the platform accepted the status; already_settled: it answered 409.
    ack_result        text CHECK (ack_result IN ('reported', 'already_settled')),
    acked_at          timestamptz,
    -- A status call in flight: other workers leave the message alone until then.
    ack_claimed_until timestamptz,
    ack_attempts      integer NOT NULL DEFAULT 0,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer_id, message_id),
    CONSTRAINT migration_forge_messages_acked_has_status
        CHECK (acked_at IS NULL OR (acked_status IS NOT NULL AND ack_result IS NOT NULL))
);

-- Messages still owed a status, for the machine and the settle sweep.
CREATE INDEX migration_forge_messages_owed_idx ON migration_forge_messages (transfer_id)
    WHERE acked_at IS NULL;
