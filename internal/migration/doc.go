// Package migration runs App Migration Platform transfers on the worker side:
// it parses the platform's webhook events, keeps each transfer's state in
// PostgreSQL, and streams each uploaded file into the vendor's Importer exactly
// once.
//
// The platform delivers events at least once and in any order: an
// app-data-uploaded may come before its transfer's listener-triggered, the same
// event may come five times, and two workers may handle two events of one
// transfer at the same moment. [Machine] makes the outcome independent of all
// that: every change of a transfer or of its uploads happens in a transaction
// holding the transfer row's lock, calls to other systems (scheduling an import,
// the product's API) happen after the commit and are made again by a retry when
// they fail, and every SQL statement is named once, in statements.go.
//
// # Transfer states
//
// A transfer is waiting (seen, no listener-triggered yet), ready (uploads are
// imported), or final: cancelled, succeeded or failed. Orthogonally it may be
// settled at the product (settled_at): a settle call is owed from the moment a
// final state is reached until the product accepted it, and a transfer the
// product says is settled is closed whatever its state. "Open" below means
// waiting or ready and not settled.
//
//	state \ input        | waiting             | ready                     | final (cancelled/succeeded/failed)
//	---------------------+---------------------+---------------------------+-----------------------------------
//	listener-triggered   | ready; parked       | ready; queued uploads     | ignored
//	                     | uploads queued and  | scheduled again           |
//	                     | scheduled           |                           |
//	app-data-uploaded    | upload parked       | upload queued, scheduled  | upload skipped, never fetched
//	cancellation         | cancelled; waiting  | cancelled; waiting        | ignored; running imports stopped
//	  requested          | uploads skipped;    | uploads skipped; imports  |
//	                     | INCOMPLETE owed     | stopped; INCOMPLETE owed  |
//	listener-errored     | failed; details     | failed; details fetched;  | details kept if none yet
//	                     | fetched; uploads    | uploads skipped; imports  |
//	                     | skipped; FAILED owed| stopped; FAILED owed      |
//	last upload imported | (no imports)        | succeeded once the product| -
//	  (Import)           |                     | lists no other; SUCCESS   |
//	                     |                     | owed                      |
//	upload failed        | (no imports)        | failed; uploads skipped;  | upload failed, transfer unchanged
//	  (FailUpload)       |                     | FAILED owed, naming it    |
//	no progress for a    | -                   | failed; FAILED owed,      | -
//	  day (Reconcile)    |                     | naming the reason         |
//	product: "expired"   | failed and settled  | failed and settled        | settle recorded expired
//	product: "settled"   | settled; uploads    | settled; uploads skipped; | settle recorded already_settled
//	                     | skipped             | imports stopped           |
//
// # Uploads
//
// An upload (one s3Key of a transfer) is parked (announced before
// listener-triggered), queued (an import task is scheduled), importing (an
// import holds its lease, renewed by heartbeats; an expired lease may be taken
// over), or final: imported (the Importer returned nil; size and SHA-256 are
// recorded), skipped (its transfer closed first) or failed (its import task gave
// up). An upload recorded imported is never imported again; the one window in
// which an Importer runs twice for one s3Key is a worker dying after the
// Importer returned and before the mark committed, which is why Importers must
// be idempotent per (transfer, s3Key).
//
// # Completion
//
// SUCCESS is owed once the final-labelled upload (MIGRATION_FINAL_LABEL) and
// every other known upload are imported and the product's list of the
// transfer's data names no upload that is not imported: an upload whose event
// has not reached this service yet keeps the transfer open, since the platform
// re-sends that event until it is acknowledged.
//
// # Nothing hangs
//
// The platform keeps a transfer open for 14 days; a customer must not watch a
// migration "in progress" for that long because a task was lost. So: an import
// task that gives up reports it (FailUpload: the transfer fails, naming the
// upload); RequeueStale schedules again imports whose task went missing;
// ReconcileStale checks again the completion of transfers whose uploads are all
// imported but which were never confirmed complete (it imports uploads the
// product lists and this service never heard of, and fails the transfer after a
// day without progress); SettlePending makes the settle calls still owed,
// including those of a worker that died mid-call. A settle call is claimed in
// one short statement before it is made, so racing workers make it once, and no
// lock is held while it runs.
//
// # Forge
//
// Forge installations run through the same machine, keyed by their
// installation ARI (ParseForgeEvent maps the avi:ecosystem.migration:* events
// onto the types above; Router sends their calls to the Forge client). The
// Forge platform settles a transfer itself and wants a status per message
// instead: each triggered:listener and uploaded:app_data message is recorded
// with its transfer, and its status is derived from the state above when it
// is sent (acknowledge): SUCCESS once handled or imported, FAILED once the
// upload is skipped or failed or its transfer closed without it. Statuses are
// claimed before their call, like settle calls, so each is sent once, and
// SettlePending sends those still owed. docs/forge-migrations.md has the rest.
package migration
