package migration

// Every SQL statement of the transfer state machine, named and documented once.
// Arguments are positional ($1, $2, ...) as each comment lists them. A statement
// that changes a transfer's or an upload's state says which transition of the
// package doc's table it makes; the tables are created by internal/schema.

// Column lists read by scanTransfer and scanUpload.
const (
	transferColumns = `transfer_id, client_key, migration_details::text, state,
	coalesce(settle_status, ''), settled_at, coalesce(settle_result, ''), coalesce(settle_error, ''),
	coalesce(settle_message, ''), last_percent, error_details::text, created_at, updated_at, ready_at, finished_at`

	uploadColumns = `transfer_id, s3_key, label, state, coalesce(size_bytes, 0), coalesce(sha256, ''),
	attempts, coalesce(last_error, ''), coalesce(skip_reason, ''), created_at, updated_at,
	started_at, imported_at, lease_until`
)

// Events.
const (
	// sqlRecordEvent inserts a received event, or counts one more delivery of it;
	// it returns the event's id and whether this is its first delivery. $1 client key, $2 dedupe key, $3 event type,
	// $4 transfer id, $5 message id, $6 s3Key, $7 known, $8 raw body (text).
	sqlRecordEvent = `
		INSERT INTO migration_events (client_key, dedupe_key, event_type, transfer_id, message_id, s3_key, known, raw)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)
		ON CONFLICT (client_key, dedupe_key) DO UPDATE
		SET deliveries = migration_events.deliveries + 1, last_received_at = now()
		RETURNING id, xmax = 0`

	// sqlRecordHandledEvent is sqlRecordEvent, with the same arguments, for an
	// event about to be acted on: it records the outcome "handled" as
	// sqlMarkEvent would at the end of the same transaction (now() is the
	// transaction's time), saving that statement. An event rejected after all
	// is marked so with sqlMarkEvent.
	sqlRecordHandledEvent = `
		INSERT INTO migration_events (client_key, dedupe_key, event_type, transfer_id, message_id, s3_key, known, raw,
			outcome, handled_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, 'handled', now())
		ON CONFLICT (client_key, dedupe_key) DO UPDATE
		SET deliveries = migration_events.deliveries + 1, last_received_at = now(), outcome = 'handled', handled_at = now()
		RETURNING id, xmax = 0`

	// sqlMarkEvent records an event's outcome (handled, unknown, rejected, ignored).
	// $1 event id, $2 outcome.
	sqlMarkEvent = `UPDATE migration_events SET outcome = $2, handled_at = now() WHERE id = $1`

	// sqlTenantInstalled reads whether the tenant is installed; no row for a
	// tenant the tenant store does not hold. $1 client key.
	sqlTenantInstalled = `SELECT installed FROM tenants WHERE client_key = $1`

	// sqlLockUnacted serialises, per tenant, the decision to store an event that
	// is not acted on, so the cap is exact. $1 client key.
	sqlLockUnacted = `SELECT pg_advisory_xact_lock(hashtextextended('connectrelay:migration-unacted:' || $1, 0))`

	// sqlOverUnactedCap reports whether an event not stored yet would exceed the
	// tenant's cap of stored events not acted on (unknown types, uninstalled
	// tenant); a re-delivery of a stored one is never over. $1 client key,
	// $2 dedupe key, $3 cap.
	sqlOverUnactedCap = `SELECT NOT EXISTS (SELECT 1 FROM migration_events WHERE client_key = $1 AND dedupe_key = $2)
		AND (SELECT count(*) FROM (SELECT 1 FROM migration_events
			WHERE client_key = $1 AND (NOT known OR outcome = 'ignored') LIMIT $3) capped) >= $3`

	// sqlCountDrop counts one event acknowledged but not stored; it returns the
	// tenant's count. $1 client key.
	sqlCountDrop = `INSERT INTO migration_event_drops (client_key, dropped) VALUES ($1, 1)
		ON CONFLICT (client_key) DO UPDATE
		SET dropped = migration_event_drops.dropped + 1, last_dropped_at = now()
		RETURNING dropped`

	// sqlPruneEvents deletes at most $2 events not received for $1 milliseconds.
	sqlPruneEvents = `DELETE FROM migration_events WHERE id IN (SELECT id FROM migration_events
		WHERE last_received_at < now() - $1 * interval '1 millisecond' LIMIT $2)`
)

// Transfers: reading and locking.
const (
	// sqlCreateTransfer creates a transfer, waiting, on first sight; nothing if it
	// exists. $1 transfer id, $2 client key, $3 migration id, $4 details (text).
	sqlCreateTransfer = `
		INSERT INTO migration_transfers (transfer_id, client_key, migration_id, migration_details)
		VALUES ($1, $2, $3, $4::text::json)
		ON CONFLICT (transfer_id) DO NOTHING`

	// sqlLockTransfer reads a transfer and holds its row lock until the
	// transaction ends: every change of a transfer and of its uploads happens
	// under it, so events and imports of one transfer never interleave.
	// $1 transfer id.
	sqlLockTransfer = `SELECT ` + transferColumns + ` FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE`

	// sqlLockTransferRow takes a transfer's row lock without reading the row.
	// $1 transfer id.
	sqlLockTransferRow = `SELECT 1 FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE`

	// sqlSettleOwed reports whether a settle call is owed to the product.
	// $1 transfer id.
	sqlSettleOwed = `SELECT settle_status IS NOT NULL AND settled_at IS NULL FROM migration_transfers
		WHERE transfer_id = $1`

	// sqlGetTransfer reads one transfer of one tenant. $1 transfer id, $2 client key.
	sqlGetTransfer = `SELECT ` + transferColumns + ` FROM migration_transfers WHERE transfer_id = $1 AND client_key = $2`

	// sqlGetTransferByID reads one transfer. $1 transfer id.
	sqlGetTransferByID = `SELECT ` + transferColumns + ` FROM migration_transfers WHERE transfer_id = $1`

	// sqlListTransfers reads a tenant's newest transfers. $1 client key, $2 limit.
	sqlListTransfers = `SELECT ` + transferColumns + ` FROM migration_transfers WHERE client_key = $1
		 ORDER BY created_at DESC, transfer_id LIMIT $2`

	// sqlAllKnownImported reads a transfer's tenant and whether it is complete
	// as far as this service knows: open, its final-labelled upload imported and
	// no upload still to import. $1 transfer id, $2 final label.
	sqlAllKnownImported = `SELECT t.client_key,
			t.state IN ('waiting', 'ready') AND t.settled_at IS NULL
			AND coalesce(bool_or(u.state = 'imported' AND u.label = $2), false)
			AND count(u.s3_key) FILTER (WHERE u.state IN ('parked', 'queued', 'importing', 'pending')) = 0
		FROM migration_transfers t LEFT JOIN migration_uploads u USING (transfer_id)
		WHERE t.transfer_id = $1
		GROUP BY t.transfer_id`
)

// Transfers: transitions.
const (
	// sqlMarkReady: waiting -> ready, on listener-triggered. $1 transfer id.
	sqlMarkReady = `UPDATE migration_transfers SET state = 'ready', ready_at = now(), updated_at = now()
		WHERE transfer_id = $1`

	// sqlMarkCancelled: open -> cancelled, settle INCOMPLETE owed (unless the
	// product settled it already), on transfer-cancellation-requested.
	// $1 transfer id.
	sqlMarkCancelled = `UPDATE migration_transfers SET state = 'cancelled', finished_at = now(), updated_at = now(),
		settle_status = CASE WHEN settled_at IS NULL THEN 'INCOMPLETE' ELSE settle_status END
		WHERE transfer_id = $1`

	// sqlMarkListenerErrored: open -> failed, settle FAILED owed (unless the
	// product settled it already), on listener-errored, with the listener's
	// error details. $1 transfer id, $2 details (text).
	sqlMarkListenerErrored = `UPDATE migration_transfers SET state = 'failed', finished_at = now(), updated_at = now(),
		error_details = $2::text::json,
		settle_status = CASE WHEN settled_at IS NULL THEN 'FAILED' ELSE settle_status END
		WHERE transfer_id = $1`

	// sqlRecordErrorDetails keeps the listener's error details of a transfer
	// already final, if it has none. $1 transfer id, $2 details (text).
	sqlRecordErrorDetails = `UPDATE migration_transfers SET error_details = $2::text::json, updated_at = now()
		WHERE transfer_id = $1 AND error_details IS NULL`

	// sqlMarkUploadFailed: open -> failed, settle FAILED owed with a message
	// naming the upload, when an upload's import gave up. $1 transfer id,
	// $2 message.
	sqlMarkUploadFailed = `UPDATE migration_transfers SET state = 'failed', finished_at = now(), updated_at = now(),
		settle_status = 'FAILED', settle_message = $2
		WHERE transfer_id = $1`

	// sqlMarkSucceeded: ready -> succeeded, settle SUCCESS owed, once every
	// upload is imported and the product confirmed it holds no other.
	// $1 transfer id.
	sqlMarkSucceeded = `UPDATE migration_transfers SET state = 'succeeded', settle_status = 'SUCCESS',
		finished_at = now(), updated_at = now() WHERE transfer_id = $1`

	// sqlFailIfNoProgress: open -> failed, settle FAILED owed with the reason,
	// when the transfer made no progress (lastProgressSQL) for a while.
	// $1 transfer id, $2 message, $3 the while in milliseconds.
	sqlFailIfNoProgress = `UPDATE migration_transfers t SET state = 'failed', settle_status = 'FAILED',
		settle_message = $2, finished_at = now(), updated_at = now()
		WHERE t.transfer_id = $1 AND t.state IN ('waiting', 'ready') AND t.settled_at IS NULL AND t.settle_status IS NULL
			AND ` + lastProgressSQL + ` < now() - $3 * interval '1 millisecond'`

	// sqlMarkExpired: open -> failed and settled (expired), when the product
	// answers that the transfer is past its 14-day window. $1 transfer id,
	// $2 settle message, $3 the product's answer.
	sqlMarkExpired = `UPDATE migration_transfers SET state = 'failed', settle_status = 'FAILED',
		settle_message = $2, settled_at = now(), settle_result = 'expired', settle_error = $3,
		settle_claimed_until = NULL, finished_at = now(), updated_at = now()
		WHERE transfer_id = $1 AND state IN ('waiting', 'ready') AND settled_at IS NULL AND settle_status IS NULL
		RETURNING client_key`

	// sqlMarkSettledByProduct: any -> settled (already_settled), when the
	// product answers that the transfer is settled and we did not settle it.
	// The state is left as it is; the transfer is closed. $1 transfer id.
	sqlMarkSettledByProduct = `UPDATE migration_transfers SET settled_at = now(), settle_result = 'already_settled',
		updated_at = now() WHERE transfer_id = $1 AND settled_at IS NULL
		RETURNING client_key`

	// sqlRecordPercent records a higher IN_PROGRESS percent. $1 transfer id,
	// $2 percent.
	sqlRecordPercent = `UPDATE migration_transfers SET last_percent = $2, updated_at = now()
		WHERE transfer_id = $1`
)

// Transfers: the settle call.
const (
	// sqlClaimSettle claims the settle call a transfer owes, for settleClaimTTL,
	// unless another worker holds a live claim; it returns what the call needs.
	// $1 transfer id, $2 claim TTL in milliseconds.
	sqlClaimSettle = `UPDATE migration_transfers
		SET settle_claimed_until = now() + $2 * interval '1 millisecond'
		WHERE transfer_id = $1 AND settle_status IS NOT NULL AND settled_at IS NULL
			AND (settle_claimed_until IS NULL OR settle_claimed_until <= now())
		RETURNING client_key, settle_status, last_percent, settle_message, settle_claimed_until`

	// sqlReleaseSettle records a failed settle call and gives its claim back.
	// $1 transfer id, $2 error, $3 the claim's expiry (so a later claim is not
	// released).
	sqlReleaseSettle = `UPDATE migration_transfers SET settle_error = $2,
		settle_claimed_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND settled_at IS NULL AND settle_claimed_until = $3`

	// sqlMarkSettled: owed -> settled, with the product's answer (reported,
	// already_settled, expired). $1 transfer id, $2 result, $3 error text or NULL.
	sqlMarkSettled = `UPDATE migration_transfers SET settled_at = now(), settle_result = $2,
		settle_error = $3, settle_claimed_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND settled_at IS NULL
		RETURNING client_key`

	// sqlListSettleOwed lists transfers owing a settle call that no live claim
	// holds, oldest first. $1 limit.
	sqlListSettleOwed = `SELECT transfer_id FROM migration_transfers
		WHERE settle_status IS NOT NULL AND settled_at IS NULL
			AND (settle_claimed_until IS NULL OR settle_claimed_until <= now())
		ORDER BY updated_at LIMIT $1`
)

// Uploads.
const (
	// sqlRecordUpload records an announced upload once per s3Key, in the state
	// the transfer's state decides (parked, queued or skipped). $1 transfer id,
	// $2 s3Key, $3 label, $4 state, $5 skip reason ("" for none).
	sqlRecordUpload = `
		INSERT INTO migration_uploads (transfer_id, s3_key, label, state, skip_reason)
		VALUES ($1, $2, $3, $4, nullif($5, ''))
		ON CONFLICT (transfer_id, s3_key) DO NOTHING`

	// sqlGetUpload reads an upload's state and label. $1 transfer id, $2 s3Key.
	sqlGetUpload = `SELECT state, label FROM migration_uploads WHERE transfer_id = $1 AND s3_key = $2`

	// sqlLockUpload reads an upload's state, label and whether a live lease holds
	// it, and locks its row. $1 transfer id, $2 s3Key.
	sqlLockUpload = `SELECT state, label, coalesce(lease_until > now(), false)
		FROM migration_uploads WHERE transfer_id = $1 AND s3_key = $2 FOR UPDATE`

	// sqlLabelUpload sets the label of an upload recorded without one (from the
	// product's list). $1 transfer id, $2 s3Key, $3 label.
	sqlLabelUpload = `UPDATE migration_uploads SET label = $3, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2`

	// sqlQueueParked: parked -> queued for every upload of a transfer, on
	// listener-triggered. $1 transfer id.
	sqlQueueParked = `UPDATE migration_uploads SET state = 'queued', updated_at = now()
		WHERE transfer_id = $1 AND state = 'parked'`

	// sqlListQueued lists a transfer's queued uploads in announcement order.
	// $1 transfer id.
	sqlListQueued = `SELECT s3_key, label FROM migration_uploads
		WHERE transfer_id = $1 AND state = 'queued' ORDER BY created_at, s3_key`

	// sqlSkipOpenUploads: parked, queued, pending -> skipped for a transfer that closed.
	// $1 transfer id, $2 reason.
	sqlSkipOpenUploads = `UPDATE migration_uploads SET state = 'skipped', skip_reason = $2, updated_at = now()
		WHERE transfer_id = $1 AND state IN ('parked', 'queued', 'pending')`

	// sqlSkipUpload: queued or importing -> skipped, when the import finds its
	// transfer closed. $1 transfer id, $2 s3Key, $3 reason.
	sqlSkipUpload = `UPDATE migration_uploads SET state = 'skipped', skip_reason = $3,
		lease_token = NULL, lease_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2`

	// sqlTakeLease: queued (or importing under an expired lease) -> importing,
	// under a new lease token for the lease TTL; it returns the attempt number.
	// $1 transfer id, $2 s3Key, $3 token, $4 TTL in milliseconds.
	sqlTakeLease = `UPDATE migration_uploads SET state = 'importing', attempts = attempts + 1,
		started_at = now(), lease_token = $3, lease_until = now() + $4 * interval '1 millisecond',
		updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2 RETURNING attempts`

	// sqlHeartbeat renews the lease an import holds and reads its transfer's
	// state and whether it is settled; no row means the lease was lost.
	// $1 transfer id, $2 s3Key, $3 token, $4 TTL in milliseconds.
	sqlHeartbeat = `
		WITH u AS (
			UPDATE migration_uploads SET lease_until = now() + $4 * interval '1 millisecond'
			WHERE transfer_id = $1 AND s3_key = $2 AND lease_token = $3 AND state = 'importing'
			RETURNING transfer_id)
		SELECT t.state, t.settled_at IS NOT NULL FROM migration_transfers t JOIN u USING (transfer_id)`

	// sqlSkipLeased: importing -> skipped, for an import stopped because its
	// transfer closed, if it still holds the lease. $1 transfer id, $2 s3Key,
	// $3 token, $4 reason, $5 error.
	sqlSkipLeased = `UPDATE migration_uploads SET state = 'skipped', skip_reason = $4,
		lease_token = NULL, lease_until = NULL, last_error = $5, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2 AND lease_token = $3`

	// sqlRequeueLeased: importing -> queued after a failed attempt, if the import
	// still holds the lease. $1 transfer id, $2 s3Key, $3 token, $4 error.
	sqlRequeueLeased = `UPDATE migration_uploads SET state = 'queued', last_error = $4,
		lease_token = NULL, lease_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2 AND lease_token = $3`

	// sqlMarkPending: importing -> pending, when the Importer handed the upload
	// over (ErrImportPending), if the import still holds the lease.
	// $1 transfer id, $2 s3Key, $3 token.
	sqlMarkPending = `UPDATE migration_uploads SET state = 'pending',
		lease_token = NULL, lease_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2 AND lease_token = $3`

	// sqlMarkImported: -> imported, with size and SHA-256, whoever holds the
	// lease now (the Importer did succeed); an upload imported already stays as
	// it is. $1 transfer id, $2 s3Key, $3 size, $4 SHA-256 (both NULL when
	// the data did not pass through this service).
	sqlMarkImported = `UPDATE migration_uploads SET state = 'imported', size_bytes = $3, sha256 = $4,
		imported_at = now(), lease_token = NULL, lease_until = NULL, last_error = NULL, skip_reason = NULL,
		updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2 AND state <> 'imported'`

	// sqlCountUploads counts a transfer's imported uploads and those still to
	// import, and says whether the final-labelled one is imported. $1 transfer
	// id, $2 final label.
	sqlCountUploads = `SELECT count(*) FILTER (WHERE state = 'imported'),
			count(*) FILTER (WHERE state IN ('parked', 'queued', 'importing', 'pending')),
			coalesce(bool_or(state = 'imported' AND label = $2), false)
		FROM migration_uploads WHERE transfer_id = $1`

	// sqlMarkUploadFailedRow: queued or importing (expired lease) -> failed,
	// with the cause. $1 transfer id, $2 s3Key, $3 cause.
	sqlMarkUploadFailedRow = `UPDATE migration_uploads SET state = 'failed', last_error = $3,
		lease_token = NULL, lease_until = NULL, updated_at = now()
		WHERE transfer_id = $1 AND s3_key = $2`

	// sqlNotImported lists (at most $3, in key order) the keys of $2, the
	// product's list of transfer $1's data, that are not imported here, with
	// how many there are in all; empty keys are ignored.
	sqlNotImported = `SELECT k, count(*) OVER () FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k WHERE k <> '') AS listed
		WHERE NOT EXISTS (SELECT 1 FROM migration_uploads u
			WHERE u.transfer_id = $1 AND u.s3_key = listed.k AND u.state = 'imported')
		ORDER BY k LIMIT $3`

	// sqlRecordListed records the keys of $2, the product's list of transfer
	// $1's data, that this service never heard of as queued uploads without a
	// label, and returns them.
	sqlRecordListed = `INSERT INTO migration_uploads (transfer_id, s3_key, state)
		SELECT $1, k, 'queued' FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k WHERE k <> '') AS listed
		ORDER BY k
		ON CONFLICT (transfer_id, s3_key) DO NOTHING
		RETURNING s3_key`

	// sqlGetUploadRow reads one upload. $1 transfer id, $2 s3Key.
	sqlGetUploadRow = `SELECT ` + uploadColumns + ` FROM migration_uploads WHERE transfer_id = $1 AND s3_key = $2`

	// sqlListUploads reads a transfer's uploads in announcement order.
	// $1 transfer id.
	sqlListUploads = `SELECT ` + uploadColumns + ` FROM migration_uploads WHERE transfer_id = $1 ORDER BY created_at, s3_key`
)

// Sweeps.
const (
	// lastProgressSQL is when the transfer aliased t last made progress: the
	// latest of its listener-triggered (ready_at), its creation, and its uploads'
	// being announced (created_at) or imported (imported_at). Neither the
	// transfer's updated_at (the reconcile sweep bumps it on every examination,
	// and progress reports bump it) nor an upload's updated_at (bumped by
	// rescheduling and failed attempts) counts: they change when nothing moved.
	// NULLs are ignored.
	lastProgressSQL = `greatest(t.ready_at, t.created_at,
	(SELECT greatest(max(u.created_at), max(u.imported_at)) FROM migration_uploads u WHERE u.transfer_id = t.transfer_id))`

	// sqlClaimStaleUploads claims (bumping updated_at and reschedules, so that
	// concurrent sweeps never pick the same upload) the uploads of open transfers
	// that nothing is going to import: queued, or importing under an expired
	// lease, and not updated for $1 milliseconds; at most $2, least recently
	// updated first. Locked rows are skipped: they are being worked on.
	sqlClaimStaleUploads = `
		WITH stale AS (
			SELECT u.transfer_id, u.s3_key
			FROM migration_uploads u JOIN migration_transfers t USING (transfer_id)
			WHERE (u.state IN ('queued', 'pending') OR (u.state = 'importing' AND coalesce(u.lease_until <= now(), true)))
				AND u.updated_at < now() - $1 * interval '1 millisecond'
				AND t.state IN ('waiting', 'ready') AND t.settled_at IS NULL
			ORDER BY u.updated_at, u.transfer_id, u.s3_key
			LIMIT $2
			FOR UPDATE OF u SKIP LOCKED)
		UPDATE migration_uploads u SET updated_at = now(), reschedules = u.reschedules + 1
		FROM stale s, migration_transfers t
		WHERE u.transfer_id = s.transfer_id AND u.s3_key = s.s3_key AND t.transfer_id = u.transfer_id
		RETURNING t.client_key, u.transfer_id, u.s3_key, u.label, u.reschedules, u.state`

	// sqlClaimUnconfirmed claims (bumping updated_at) the ready transfers whose
	// completion was never confirmed: no settle status, final-labelled upload
	// imported, no upload still to import, not updated for $1 milliseconds; at
	// most $2, least recently updated first. $3 final label.
	sqlClaimUnconfirmed = `
		WITH stale AS (
			SELECT t.transfer_id
			FROM migration_transfers t
			WHERE t.state = 'ready' AND t.settle_status IS NULL AND t.settled_at IS NULL
				AND t.updated_at < now() - $1 * interval '1 millisecond'
				AND EXISTS (SELECT 1 FROM migration_uploads u
					WHERE u.transfer_id = t.transfer_id AND u.state = 'imported' AND u.label = $3)
				AND NOT EXISTS (SELECT 1 FROM migration_uploads u
					WHERE u.transfer_id = t.transfer_id AND u.state IN ('parked', 'queued', 'importing', 'pending'))
			ORDER BY t.updated_at, t.transfer_id
			LIMIT $2
			FOR UPDATE OF t SKIP LOCKED)
		UPDATE migration_transfers t SET updated_at = now()
		FROM stale s WHERE t.transfer_id = s.transfer_id
		RETURNING t.transfer_id, t.client_key`
)

// The bundled importer's record.
const (
	// sqlRecordImportedData records what the RecordingImporter read of an
	// upload, once. $1 transfer id, $2 s3Key, $3 client key, $4 label, $5 size,
	// $6 SHA-256.
	sqlRecordImportedData = `
		INSERT INTO migration_imported_data (transfer_id, s3_key, client_key, label, size_bytes, sha256)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (transfer_id, s3_key) DO NOTHING`

	// sqlListImportedData reads what the RecordingImporter recorded for a
	// transfer. $1 transfer id.
	sqlListImportedData = `SELECT transfer_id, s3_key, client_key, label, size_bytes, sha256, imported_at
		FROM migration_imported_data WHERE transfer_id = $1 ORDER BY imported_at, s3_key`
)

// Forge message acknowledgements (migration_forge_messages, forge_ack.go).
const (
	// sqlRecordForgeMessage records, once, a Forge message that owes a status.
	// $1 transfer id, $2 message id, $3 kind (the machine's event type), $4 s3Key
	// or ''.
	sqlRecordForgeMessage = `
		INSERT INTO migration_forge_messages (transfer_id, message_id, kind, s3_key)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (transfer_id, message_id) DO NOTHING`

	// forgeAckDecided is the condition under which a message's status is known,
	// and forgeAckStatus that status (see 0008_forge_migration.sql), over m
	// (the message), t (its transfer) and u (its upload, or NULLs).
	forgeAckDecided = `(m.kind = 'listener-triggered' OR u.state IN ('imported', 'skipped', 'failed')
		OR t.state IN ('cancelled', 'failed') OR t.settled_at IS NOT NULL)`
	forgeAckStatus = `CASE WHEN m.kind = 'listener-triggered' OR u.state = 'imported' THEN 'SUCCESS' ELSE 'FAILED' END`
	forgeAckJoin   = `migration_forge_messages m
		JOIN migration_transfers t ON t.transfer_id = m.transfer_id
		LEFT JOIN migration_uploads u ON u.transfer_id = m.transfer_id AND u.s3_key = m.s3_key`

	// sqlClaimForgeAcks claims, for a claim TTL, the transfer's messages whose
	// status is known and not sent, that no live claim holds, and returns the
	// tenant, each message and its status. $1 transfer id, $2 claim TTL in
	// milliseconds, $3 limit.
	sqlClaimForgeAcks = `
		WITH due AS (
			SELECT m.message_id, ` + forgeAckStatus + ` AS status, t.client_key
			FROM ` + forgeAckJoin + `
			WHERE m.transfer_id = $1 AND m.acked_at IS NULL
				AND (m.ack_claimed_until IS NULL OR m.ack_claimed_until <= now())
				AND ` + forgeAckDecided + `
			ORDER BY m.message_id
			LIMIT $3
			FOR UPDATE OF m SKIP LOCKED
		)
		UPDATE migration_forge_messages m
		SET ack_claimed_until = now() + $2 * interval '1 millisecond', ack_attempts = m.ack_attempts + 1, updated_at = now()
		FROM due
		WHERE m.transfer_id = $1 AND m.message_id = due.message_id
		RETURNING due.client_key, m.message_id, due.status`

	// sqlMarkForgeAcked records the platform's answer to a status call.
	// $1 transfer id, $2 message ids, $3 status, $4 result (reported,
	// already_settled).
	sqlMarkForgeAcked = `UPDATE migration_forge_messages
		SET acked_at = now(), acked_status = $3, ack_result = $4, ack_claimed_until = NULL, last_error = NULL, updated_at = now()
		WHERE transfer_id = $1 AND message_id = ANY($2) AND acked_at IS NULL`

	// sqlReleaseForgeAcks records a failed status call and gives its claims
	// back. $1 transfer id, $2 message ids, $3 error.
	sqlReleaseForgeAcks = `UPDATE migration_forge_messages
		SET ack_claimed_until = NULL, last_error = $3, updated_at = now()
		WHERE transfer_id = $1 AND message_id = ANY($2) AND acked_at IS NULL`

	// sqlListForgeAckOwed lists transfers with messages whose status is known
	// and not sent, that no live claim holds, oldest message first. $1 limit.
	sqlListForgeAckOwed = `
		SELECT m.transfer_id FROM ` + forgeAckJoin + `
		WHERE m.acked_at IS NULL AND (m.ack_claimed_until IS NULL OR m.ack_claimed_until <= now())
			AND ` + forgeAckDecided + `
		GROUP BY m.transfer_id ORDER BY min(m.created_at) LIMIT $1`

	// sqlForgeMessages lists a transfer's Forge messages and what was sent for
	// them, for status queries and tests. $1 transfer id.
	sqlForgeMessages = `SELECT message_id, kind, s3_key, coalesce(acked_status, ''), coalesce(ack_result, ''),
		acked_at, ack_attempts, coalesce(last_error, '')
		FROM migration_forge_messages WHERE transfer_id = $1 ORDER BY created_at, message_id`
)
