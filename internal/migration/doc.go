// Package migration runs Atlassian App Migration Platform (AMP) transfers on the
// worker side: it parses the AMP webhook events, keeps each transfer's state in
// PostgreSQL, and imports the uploaded app data into the vendor's Importer.
//
// AMP delivers events at least once and in any order (PROTOCOL.md §5): an
// app-data-uploaded may come before the transfer's listener-triggered, the same
// event may come five times, and two workers may handle two events of one transfer
// at the same moment. Machine makes the outcome independent of all that:
//
//   - every event is applied in a transaction holding the transfer row's lock, so
//     two events of one transfer never interleave; an upload announced before
//     listener-triggered is parked and queued by listener-triggered itself;
//   - each upload (s3Key) is recorded once and imported under a lease, and its
//     "imported" mark is final, so its data is fetched and imported once;
//   - calls to other systems (scheduling an import, settling with the product,
//     listing the product's uploads) happen after the commit, never while a row
//     is locked, and are made again by a retry when they fail; a settle call is
//     claimed first (one short statement), so racing workers make it once;
//   - SUCCESS is settled only when the final-labelled upload and every known
//     upload are imported and the product lists no other upload.
//
// No transfer is left hanging: an import task that gives up reports it with
// FailUpload (the transfer fails and is settled FAILED), RequeueStale schedules
// again the imports whose task was lost, ReconcileStale checks again the
// completion of transfers whose uploads are all imported but which were never
// confirmed complete (importing the uploads the product lists and this service
// never heard of, and failing the transfer once it made no progress for a day),
// and SettlePending makes the settle calls still owed, including those of a
// worker that died mid-call.
//
// Exactly-once and at-least-once: an upload recorded imported is never imported
// again. The one window in which an Importer runs twice for one s3Key is a worker
// dying after the Importer returned and before the mark committed; the Importer
// must therefore be idempotent per (transfer, s3Key), as the bundled
// RecordingImporter is. Event-level deduplication by messageId happens before
// the machine (package dedupe, in the worker) and only narrows how often the
// machine sees a re-delivered event; the machine does not rely on it.
//
// The AMP REST API, the Importer and the task Scheduler are interfaces defined
// here, by their consumer; packages amp and tasks implement them.
package migration
