package migration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// An import task that gives up fails its upload and, with it, the transfer: the
// customer learns now, with the upload's name, instead of when AMP's window ends.
func TestFailUploadFailsTheTransfer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-fail-upload"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/done", "part-1"))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/broken", "part-2"))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/waiting", "final"))
	byKey := map[string]migration.UploadRef{}
	for _, r := range b.queue.take() {
		byKey[r.S3Key] = r
	}
	if err := m.Import(ctx, byKey["s3/done"]); err != nil {
		t.Fatal(err)
	}
	// Every attempt fails; the task layer gives up after its last retry.
	b.amp.openErr = errors.New(`Get "https://bucket.s3.amazonaws.com/obj?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA": 500, ` +
		`sent Authorization: JWT eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl`)
	cause := m.Import(ctx, byKey["s3/broken"])
	if cause == nil {
		t.Fatal("Import succeeded with a failing download")
	}
	b.amp.openErr = nil
	if err := m.FailUpload(ctx, byKey["s3/broken"], cause); err != nil {
		t.Fatalf("FailUpload: %v", err)
	}

	want := map[string]migration.UploadState{
		"s3/done": migration.UploadImported, "s3/broken": migration.UploadFailed, "s3/waiting": migration.UploadSkipped,
	}
	if diff := cmp.Diff(want, uploadStates(t, ctx, m, tid)); diff != "" {
		t.Errorf("uploads (-want +got):\n%s", diff)
	}
	us, _ := m.Uploads(ctx, tid)
	for _, u := range us {
		if u.S3Key != "s3/broken" {
			continue
		}
		for _, secret := range []string{"deadbeef", "AKIA", "eyJ", "c2lnbmF0dXJl"} {
			if strings.Contains(u.LastError, secret) {
				t.Errorf("recorded cause keeps a secret (%s): %s", secret, u.LastError)
			}
		}
		if !strings.Contains(u.LastError, "https://bucket.s3.amazonaws.com/obj?REDACTED") || !strings.Contains(u.LastError, "500") {
			t.Errorf("recorded cause %q, want the redacted error", u.LastError)
		}
	}
	tr := transfer(t, ctx, m, tid)
	if tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed || tr.SettledAt.IsZero() ||
		tr.SettleResult != connectrelay.SettleReported || !strings.Contains(tr.SettleMessage, "s3/broken") {
		t.Errorf("transfer = %+v, want failed and settled FAILED naming the upload", tr)
	}
	calls := b.amp.calls(tid)
	if len(calls) == 0 || calls[len(calls)-1].Status != product.StatusFailed ||
		!strings.Contains(calls[len(calls)-1].Message, `"s3/broken"`) {
		t.Errorf("progress calls %+v, want FAILED naming the upload last", calls)
	}

	// Idempotent: the task layer may report twice; nothing is settled twice.
	if err := m.FailUpload(ctx, byKey["s3/broken"], cause); err != nil {
		t.Errorf("second FailUpload: %v", err)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
		t.Errorf("settle calls %v, want one FAILED", got)
	}
	// A failed upload is final: a late task does not fetch it.
	if err := m.Import(ctx, byKey["s3/broken"]); err != nil {
		t.Errorf("Import of a failed upload: %v", err)
	}
	if err := m.Import(ctx, byKey["s3/waiting"]); err != nil {
		t.Errorf("Import of a skipped upload: %v", err)
	}
	if n := b.amp.openCount("s3/broken"); n != 1 {
		t.Errorf("failed upload fetched %d times, want 1 (the failed attempt)", n)
	}
	if n := b.amp.openCount("s3/waiting"); n != 0 {
		t.Errorf("skipped upload fetched %d times", n)
	}
}

// FailUpload changes nothing where nothing is stuck: an imported (or skipped)
// upload, a parked one (listener-triggered schedules it), one imported right now
// under a live lease, an unknown one; and nothing at all for another tenant.
func TestFailUploadLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	imp := &blockingImporter{started: make(chan struct{})}
	m := b.machine(t, b.count, nil, migration.Options{})
	mBlocking := b.machine(t, imp, nil, migration.Options{})
	cause := errors.New("retries exhausted")

	const done = "transfer-fail-done"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, done, nil))
	handle(t, ctx, m, uploadEvent(t, done, "s3/final", "final"))
	ref := b.queue.take()[0]
	if err := m.Import(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := m.FailUpload(ctx, ref, cause); err != nil {
		t.Errorf("FailUpload of an imported upload: %v", err)
	}
	if st := uploadStates(t, ctx, m, done); st["s3/final"] != migration.UploadImported {
		t.Errorf("imported upload became %s", st["s3/final"])
	}
	if tr := transfer(t, ctx, m, done); tr.State != connectrelay.TransferSucceeded || tr.SettleStatus != product.StatusSuccess {
		t.Errorf("succeeded transfer = %+v", tr)
	}

	const parked = "transfer-fail-parked"
	handle(t, ctx, m, uploadEvent(t, parked, "s3/p", "final"))
	if err := m.FailUpload(ctx, migration.UploadRef{ClientKey: tenant, TransferID: parked, S3Key: "s3/p"}, cause); err != nil {
		t.Errorf("FailUpload of a parked upload: %v", err)
	}
	if st := uploadStates(t, ctx, m, parked); st["s3/p"] != migration.UploadParked {
		t.Errorf("parked upload became %s", st["s3/p"])
	}
	if err := m.FailUpload(ctx, migration.UploadRef{TransferID: parked, S3Key: "s3/unknown"}, cause); err != nil {
		t.Errorf("FailUpload of an unknown upload: %v", err)
	}
	if err := m.FailUpload(ctx, migration.UploadRef{TransferID: "nope", S3Key: "s3/unknown"}, cause); err != nil {
		t.Errorf("FailUpload of an unknown transfer: %v", err)
	}

	const live = "transfer-fail-live"
	b.amp.sizes["s3/big"] = 8 << 20
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, live, nil))
	handle(t, ctx, m, uploadEvent(t, live, "s3/big", "final"))
	ref = b.queue.take()[0]
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	importDone := make(chan error, 1)
	go func() { importDone <- mBlocking.Import(ictx, ref) }()
	<-imp.started
	// A stale duplicate task of the upload gives up while the import runs.
	if err := m.FailUpload(ctx, ref, cause); err != nil {
		t.Errorf("FailUpload of an upload under a live lease: %v", err)
	}
	other := ref
	other.ClientKey = otherTenant
	if err := m.FailUpload(ctx, other, cause); !errors.Is(err, migration.ErrTenantMismatch) {
		t.Errorf("FailUpload for another tenant: %v, want ErrTenantMismatch", err)
	}
	if st := uploadStates(t, ctx, m, live); st["s3/big"] != migration.UploadImporting {
		t.Errorf("upload under a live lease became %s", st["s3/big"])
	}
	if tr := transfer(t, ctx, m, live); tr.State != connectrelay.TransferReady {
		t.Errorf("transfer of a live import = %+v, want ready", tr)
	}
	stop()
	<-importDone
	if got := b.amp.settleCalls(live); len(got) != 0 {
		t.Errorf("settle calls %v", got)
	}
}

// The settle call of a failed upload's transfer may fail: FailUpload reports it
// and the sweep makes it.
func TestFailUploadSettleFailureIsSwept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-fail-sweep"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "final"))
	ref := b.queue.take()[0]
	b.amp.progressErr, b.amp.progressErrN = errors.New("product: 503"), 1
	if err := m.FailUpload(ctx, ref, errors.New("permanent")); err == nil {
		t.Fatal("FailUpload succeeded although its settle call failed")
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferFailed || !tr.SettledAt.IsZero() {
		t.Fatalf("transfer = %+v, want failed with the settle owed", tr)
	}
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 1 {
		t.Fatalf("SettlePending = %d, %v", n, err)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
		t.Errorf("settle calls %v, want one FAILED", got)
	}
}

// age makes uploads look untouched for d.
func age(t *testing.T, ctx context.Context, b *bundle, tid string, d time.Duration, keys ...string) {
	t.Helper()
	if _, err := b.pool.Exec(ctx, `UPDATE migration_uploads SET updated_at = updated_at - $3 * interval '1 millisecond'
		WHERE transfer_id = $1 AND s3_key = ANY($2)`, tid, keys, d.Milliseconds()); err != nil {
		t.Fatal(err)
	}
}

// Uploads whose import task was lost stay queued (or importing under a dead
// worker's expired lease): the stale sweep schedules them again under a new task
// ID, and not again before olderThan has passed once more.
func TestRequeueStaleSchedulesLostImports(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second})
	const tid, closed = "transfer-stale", "transfer-stale-closed"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	for _, k := range []string{"s3/lost", "s3/fresh", "s3/dead-worker", "s3/live", "s3/final"} {
		label := "part"
		if k == "s3/final" {
			label = "final"
		}
		handle(t, ctx, m, uploadEvent(t, tid, k, label))
	}
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, closed, nil))
	handle(t, ctx, m, uploadEvent(t, closed, "s3/closed", "final"))
	handle(t, ctx, m, uploadEvent(t, "transfer-stale-waiting", "s3/parked", "final"))
	b.queue.take() // the tasks are lost
	// s3/dead-worker: taken by a worker that died (its lease expired); s3/live: an
	// import running now (live lease); s3/closed: its transfer failed elsewhere.
	if _, err := b.pool.Exec(ctx, `UPDATE migration_uploads SET state = 'importing', lease_token = 'dead',
		lease_until = now() - interval '1 minute' WHERE transfer_id = $1 AND s3_key = 's3/dead-worker'`, tid); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE migration_uploads SET state = 'importing', lease_token = 'live',
		lease_until = now() + interval '1 hour' WHERE transfer_id = $1 AND s3_key = 's3/live'`, tid); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE migration_transfers SET state = 'failed' WHERE transfer_id = $1`, closed); err != nil {
		t.Fatal(err)
	}
	age(t, ctx, b, tid, 2*time.Hour, "s3/lost", "s3/dead-worker", "s3/live", "s3/final")
	age(t, ctx, b, closed, 2*time.Hour, "s3/closed")
	age(t, ctx, b, "transfer-stale-waiting", 2*time.Hour, "s3/parked")

	if _, err := m.RequeueStale(ctx, 0, 10); err == nil {
		t.Error("RequeueStale accepted olderThan 0")
	}
	n, err := m.RequeueStale(ctx, time.Hour, 2)
	if err != nil || n != 2 {
		t.Fatalf("RequeueStale(limit 2) = %d, %v; want 2", n, err)
	}
	n, err = m.RequeueStale(ctx, time.Hour, 10)
	if err != nil || n != 1 {
		t.Fatalf("second RequeueStale = %d, %v; want the 1 left", n, err)
	}
	refs := b.queue.take()
	got := map[string]int{}
	for _, r := range refs {
		if r.ClientKey != tenant || r.TransferID != tid || r.Label == "" {
			t.Errorf("scheduled %+v", r)
		}
		got[r.S3Key] = r.Reschedule
	}
	want := map[string]int{"s3/lost": 1, "s3/dead-worker": 1, "s3/final": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rescheduled uploads and their Reschedule (-want +got):\n%s", diff)
	}
	// Just scheduled: not again before olderThan passes.
	if n, err := m.RequeueStale(ctx, time.Hour, 10); err != nil || n != 0 {
		t.Errorf("immediate RequeueStale = %d, %v; want 0", n, err)
	}
	// Lost again: scheduled under yet another task ID.
	age(t, ctx, b, tid, 2*time.Hour, "s3/lost")
	if n, err := m.RequeueStale(ctx, time.Hour, 10); err != nil || n != 1 {
		t.Fatalf("RequeueStale after the second loss = %d, %v", n, err)
	}
	again := b.queue.take()
	if len(again) != 1 || again[0].S3Key != "s3/lost" || again[0].Reschedule != 2 {
		t.Errorf("rescheduled %+v, want s3/lost with Reschedule 2", again)
	}

	// The rescheduled tasks import normally (the dead worker's upload is taken over).
	for _, r := range append(refs, again...) {
		if err := m.Import(ctx, r); err != nil {
			t.Errorf("Import(%s): %v", r.S3Key, err)
		}
	}
	wantStates := map[string]migration.UploadState{
		"s3/lost": migration.UploadImported, "s3/fresh": migration.UploadQueued, "s3/dead-worker": migration.UploadImported,
		"s3/live": migration.UploadImporting, "s3/final": migration.UploadImported,
	}
	if diff := cmp.Diff(wantStates, uploadStates(t, ctx, m, tid)); diff != "" {
		t.Errorf("uploads (-want +got):\n%s", diff)
	}

	// A scheduling failure is reported, and retried after olderThan.
	age(t, ctx, b, tid, 2*time.Hour, "s3/fresh")
	b.queue.fail = errors.New("redis: connection refused")
	if n, err := m.RequeueStale(ctx, time.Hour, 10); err == nil || n != 0 {
		t.Errorf("RequeueStale with a failing scheduler = %d, %v; want 0 and an error", n, err)
	}
	age(t, ctx, b, tid, 2*time.Hour, "s3/fresh")
	if n, err := m.RequeueStale(ctx, time.Hour, 10); err != nil || n != 1 {
		t.Errorf("RequeueStale after the scheduler recovered = %d, %v; want 1", n, err)
	}
}

// SUCCESS is settled only once every upload the product holds is imported: an
// upload whose event has not arrived keeps the transfer open, and the product is
// asked with no lock held.
func TestSuccessWaitsForUploadsTheProductLists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-listdata"
	b.amp.listed[tid] = []string{"s3/final", "s3/late"}
	b.amp.hook = func(hctx context.Context, call, transferID string) error {
		if call != "ListData" {
			return nil
		}
		// Fails if the caller holds the transfer's row lock.
		_, err := b.pool.Exec(hctx, `SELECT 1 FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE NOWAIT`, transferID)
		return err
	}
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if n := b.amp.listCount(tid); n != 1 {
		t.Errorf("ListData called %d times, want 1", n)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || tr.SettleStatus != "" {
		t.Fatalf("transfer = %+v, want still open (s3/late is not imported)", tr)
	}
	if got := b.amp.settleCalls(tid); len(got) != 0 {
		t.Fatalf("settled %v before every listed upload was imported", got)
	}
	// The late upload's event arrives and is imported: now the transfer succeeds.
	handle(t, ctx, m, uploadEvent(t, tid, "s3/late", "part"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferSucceeded || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want succeeded and settled", tr)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v, want one SUCCESS", got)
	}
}

// When the product cannot list the transfer's data, SUCCESS is not settled: the
// import returns an error (its upload stays imported) and its retry completes it.
// A "settled" answer to the list is final.
func TestListDataFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-listdata-5xx"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
	ref := b.queue.take()[0]
	listErr := errors.New("product: 502")
	b.amp.listErr = listErr
	if err := m.Import(ctx, ref); !errors.Is(err, listErr) {
		t.Fatalf("Import with a failing list: %v, want it wrapped", err)
	}
	if st := uploadStates(t, ctx, m, tid); st["s3/final"] != migration.UploadImported {
		t.Errorf("upload %s, want imported", st["s3/final"])
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || len(b.amp.settleCalls(tid)) != 0 {
		t.Fatalf("transfer = %+v, settle calls %v; want open", tr, b.amp.settleCalls(tid))
	}
	b.amp.listErr = nil
	if err := m.Import(ctx, ref); err != nil {
		t.Fatalf("retried Import: %v", err)
	}
	if n := b.count.count("s3/final"); n != 1 {
		t.Errorf("Importer called %d times, want 1", n)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v, want one SUCCESS", got)
	}

	const settled = "transfer-listdata-403"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, settled, nil))
	handle(t, ctx, m, uploadEvent(t, settled, "s3/final", "final"))
	b.amp.listErr = fmt.Errorf("product: 403 settled: %w", product.ErrTransferSettled)
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import answered settled: %v", err)
	}
	if tr := transfer(t, ctx, m, settled); tr.SettleResult != connectrelay.SettleAlreadySettled || tr.SettledAt.IsZero() {
		t.Errorf("transfer = %+v, want settled by the product", tr)
	}
	if got := b.amp.settleCalls(settled); len(got) != 0 {
		t.Errorf("settle calls %v", got)
	}
}
