package migration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// backdate makes the transfer and its uploads look d older: every timestamp of
// them moves back by d.
func backdate(t *testing.T, ctx context.Context, b *bundle, tid string, d time.Duration) {
	t.Helper()
	ms := d.Milliseconds()
	if _, err := b.pool.Exec(ctx, `UPDATE migration_transfers SET created_at = created_at - $2 * interval '1 millisecond',
		updated_at = updated_at - $2 * interval '1 millisecond', ready_at = ready_at - $2 * interval '1 millisecond'
		WHERE transfer_id = $1`, tid, ms); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE migration_uploads SET created_at = created_at - $2 * interval '1 millisecond',
		updated_at = updated_at - $2 * interval '1 millisecond', started_at = started_at - $2 * interval '1 millisecond',
		imported_at = imported_at - $2 * interval '1 millisecond'
		WHERE transfer_id = $1`, tid, ms); err != nil {
		t.Fatal(err)
	}
}

// stuckOnList makes tid a transfer whose final upload is imported while the
// product's list of its data fails with listErr: the import returns the error
// and the transfer stays open.
func stuckOnList(t *testing.T, ctx context.Context, b *bundle, m *migration.Machine, tid string, listErr error) migration.UploadRef {
	t.Helper()
	b.amp.setListErr(tid, listErr)
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
	refs := b.queue.take()
	if len(refs) != 1 {
		t.Fatalf("scheduled %+v, want the final upload", refs)
	}
	if err := m.Import(ctx, refs[0]); !errors.Is(err, listErr) {
		t.Fatalf("Import with a failing list: %v, want %v", err, listErr)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || tr.SettleStatus != "" {
		t.Fatalf("transfer = %+v, want open", tr)
	}
	return refs[0]
}

// reconcile runs ReconcileStale and checks how many transfers it examined.
func reconcile(t *testing.T, ctx context.Context, m *migration.Machine, olderThan, giveUpAfter time.Duration, want int) error {
	t.Helper()
	n, err := m.ReconcileStale(ctx, olderThan, giveUpAfter, 10)
	if n != want {
		t.Fatalf("ReconcileStale examined %d transfers (err %v), want %d", n, err, want)
	}
	return err
}

// The product's list keeps failing after the final upload was imported: no other
// sweep touches the transfer, so it would stay open until AMP's window ends.
// ReconcileStale asks again every olderThan, and once the transfer has made no
// progress for giveUpAfter it fails it and settles FAILED, naming the reason.
func TestReconcileStaleGivesUpWhenTheListKeepsFailing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-reconcile-5xx"
	listErr := errors.New(`product: GET https://site.example/rest/atlassian-connect/1/migration/data/x/all?jwt=secret-token: ` +
		`502 Bad Gateway, sent Authorization: JWT eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl`)
	ref := stuckOnList(t, ctx, b, m, tid, listErr)

	// What the import task's giving up and the other sweeps do: nothing.
	if err := m.FailUpload(ctx, ref, listErr); err != nil {
		t.Fatalf("FailUpload: %v", err)
	}
	backdate(t, ctx, b, tid, 2*time.Hour)
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 0 {
		t.Fatalf("SettlePending = %d, %v", n, err)
	}
	if n, err := m.RequeueStale(ctx, time.Minute, 10); err != nil || n != 0 {
		t.Fatalf("RequeueStale = %d, %v", n, err)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || tr.SettleStatus != "" {
		t.Fatalf("transfer = %+v, want still open", tr)
	}
	lists := b.amp.listCount(tid)

	if _, err := m.ReconcileStale(ctx, 0, time.Hour, 10); err == nil {
		t.Error("ReconcileStale accepted olderThan 0")
	}
	if _, err := m.ReconcileStale(ctx, time.Hour, 0, 10); err == nil {
		t.Error("ReconcileStale accepted giveUpAfter 0")
	}

	// Two hours without progress: asked again, still failing, kept open.
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); !errors.Is(err, listErr) {
		t.Fatalf("ReconcileStale: %v, want the list's error", err)
	}
	if n := b.amp.listCount(tid); n != lists+1 {
		t.Errorf("ListData called %d times, want %d", n, lists+1)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || tr.SettleStatus != "" {
		t.Fatalf("transfer = %+v, want still open before giveUpAfter", tr)
	}
	// Examined just now: not again before olderThan has passed again.
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	if n := b.amp.listCount(tid); n != lists+1 {
		t.Errorf("ListData called %d times, want %d", n, lists+1)
	}

	// A day without progress: given up.
	backdate(t, ctx, b, tid, 25*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed || tr.SettledAt.IsZero() ||
		tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want failed and settled FAILED", tr)
	}
	if !strings.HasPrefix(tr.SettleMessage, "could not confirm uploaded data: ") || !strings.Contains(tr.SettleMessage, "502") {
		t.Errorf("settle message %q, want the reason with the list's error", tr.SettleMessage)
	}
	for _, secret := range []string{"secret-token", "eyJ", "c2lnbmF0dXJl"} {
		if strings.Contains(tr.SettleMessage, secret) {
			t.Errorf("settle message keeps a secret (%s): %s", secret, tr.SettleMessage)
		}
	}
	calls := b.amp.calls(tid)
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
		t.Fatalf("settle calls %v, want one FAILED", got)
	}
	if last := calls[len(calls)-1]; last.Message != tr.SettleMessage {
		t.Errorf("settle call message %q, want %q", last.Message, tr.SettleMessage)
	}
	if st := uploadStates(t, ctx, m, tid); st["s3/final"] != migration.UploadImported {
		t.Errorf("final upload %s, want imported", st["s3/final"])
	}
	// Closed: never examined again.
	backdate(t, ctx, b, tid, 48*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 0); err != nil {
		t.Fatal(err)
	}
}

// A list that works again completes the transfer as the import would have: SUCCESS,
// even past giveUpAfter, with the product asked with no lock held and the upload
// not imported again.
func TestReconcileStaleSucceedsWhenTheListRecovers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-reconcile-recovers"
	listErr := errors.New("product: 401 Unauthorized")
	stuckOnList(t, ctx, b, m, tid, listErr)
	b.amp.listed[tid] = []string{"s3/final"}
	b.amp.hook = func(hctx context.Context, call, transferID string) error {
		if call != "ListData" {
			return nil
		}
		// Fails if the caller holds the transfer's row lock.
		_, err := b.pool.Exec(hctx, `SELECT 1 FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE NOWAIT`, transferID)
		return err
	}

	backdate(t, ctx, b, tid, 2*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); !errors.Is(err, listErr) {
		t.Fatalf("ReconcileStale: %v, want the list's error", err)
	}
	b.amp.setListErr(tid, nil)
	backdate(t, ctx, b, tid, 48*time.Hour) // past giveUpAfter: the working list decides
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.State != connectrelay.TransferSucceeded || tr.SettleStatus != product.StatusSuccess || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want succeeded and settled SUCCESS", tr)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v, want one SUCCESS", got)
	}
	if n := b.count.count("s3/final"); n != 1 {
		t.Errorf("Importer called %d times, want 1", n)
	}
}

// The product lists uploads whose app-data-uploaded never reached this service
// (their event task was archived): the list is authoritative, so they are
// recorded queued and scheduled, and the import of the last one settles SUCCESS.
// An event arriving before the import supplies the label the list lacks.
func TestReconcileStaleImportsUploadsOnlyTheProductListed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-reconcile-orphans"
	b.amp.listed[tid] = []string{"s3/final", "s3/orphan-b", "s3/orphan-a", "s3/orphan-a", ""}
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady {
		t.Fatalf("transfer = %+v, want open: the product lists uploads not imported", tr)
	}

	// Without progress for longer than giveUpAfter, but the uploads can still be
	// imported: recorded and scheduled, not given up.
	backdate(t, ctx, b, tid, 2*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, time.Minute, 1); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	want := map[string]migration.UploadState{
		"s3/final": migration.UploadImported, "s3/orphan-a": migration.UploadQueued, "s3/orphan-b": migration.UploadQueued,
	}
	if diff := cmp.Diff(want, uploadStates(t, ctx, m, tid)); diff != "" {
		t.Errorf("uploads (-want +got):\n%s", diff)
	}
	refs := b.queue.take()
	wantRefs := []migration.UploadRef{
		{ClientKey: tenant, TransferID: tid, S3Key: "s3/orphan-a"},
		{ClientKey: tenant, TransferID: tid, S3Key: "s3/orphan-b"},
	}
	if diff := cmp.Diff(wantRefs, refs); diff != "" {
		t.Errorf("scheduled (-want +got):\n%s", diff)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || len(b.amp.settleCalls(tid)) != 0 {
		t.Fatalf("transfer = %+v, settle calls %v; want open while the listed uploads import", tr, b.amp.settleCalls(tid))
	}
	// Queued uploads: the transfer is no candidate while they are imported.
	backdate(t, ctx, b, tid, 2*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, time.Minute, 0); err != nil {
		t.Fatal(err)
	}

	// orphan-a's event does arrive after all, before its import.
	handle(t, ctx, m, uploadEvent(t, tid, "s3/orphan-a", "part-a"))
	refs = append(refs, b.queue.take()...)
	for _, r := range refs {
		if err := m.Import(ctx, r); err != nil {
			t.Fatalf("Import(%s): %v", r.S3Key, err)
		}
	}
	tr := transfer(t, ctx, m, tid)
	if tr.State != connectrelay.TransferSucceeded || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want succeeded and settled", tr)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v, want one SUCCESS", got)
	}
	labels := map[string]string{}
	rows, err := b.pool.Query(ctx, `SELECT s3_key, label FROM migration_imported_data WHERE transfer_id = $1`, tid)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, l string
		if err := rows.Scan(&k, &l); err != nil {
			t.Fatal(err)
		}
		labels[k] = l
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{"s3/final": "final", "s3/orphan-a": "part-a", "s3/orphan-b": ""}
	if diff := cmp.Diff(wantLabels, labels); diff != "" {
		t.Errorf("imported labels (-want +got):\n%s", diff)
	}
	for _, k := range []string{"s3/final", "s3/orphan-a", "s3/orphan-b"} {
		if n := b.count.count(k); n != 1 {
			t.Errorf("Importer called %d times for %s, want 1", n, k)
		}
	}
}

// Uploads the product lists that were skipped or failed here will never be
// imported: once giveUpAfter passes the transfer fails, naming them.
func TestReconcileStaleGivesUpOnListedUploadsThatNeverComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-reconcile-never"
	listed := []string{"s3/final"}
	for i := range 12 {
		listed = append(listed, fmt.Sprintf("s3/dropped-%02d", i))
	}
	b.amp.listed[tid] = listed
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
	if _, err := b.pool.Exec(ctx, `INSERT INTO migration_uploads (transfer_id, s3_key, state, skip_reason)
		SELECT $1, k, 'skipped', 'lost' FROM unnest($2::text[]) AS k`, tid, listed[1:]); err != nil {
		t.Fatal(err)
	}
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	backdate(t, ctx, b, tid, 2*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady || len(b.queue.take()) != 0 {
		t.Fatalf("transfer = %+v, want open (and nothing scheduled) before giveUpAfter", tr)
	}
	backdate(t, ctx, b, tid, 24*time.Hour)
	if err := reconcile(t, ctx, m, time.Hour, 24*time.Hour, 1); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	tr := transfer(t, ctx, m, tid)
	wantMsg := "uploads listed by the product never completed: " + strings.Join(listed[1:11], ", ") + " (truncated: 12 in all)"
	if tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed || tr.SettleMessage != wantMsg ||
		tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want failed and settled FAILED with %q", tr, wantMsg)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
		t.Errorf("settle calls %v, want one FAILED", got)
	}
}

// The product's "already settled" and "expired" answers to the list are final,
// whether ReconcileStale or the import gets them: recorded, no settle call.
func TestReconcileStaleFinalAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const settled, expired, expiredOnImport = "transfer-reconcile-settled", "transfer-reconcile-expired", "transfer-import-expired"
	stuckOnList(t, ctx, b, m, settled, errors.New("product: 503"))
	stuckOnList(t, ctx, b, m, expired, errors.New("product: 503"))
	b.amp.setListErr(settled, fmt.Errorf("product: 403 settled: %w", product.ErrTransferSettled))
	expiredErr := fmt.Errorf("product: 400 Bad Request: %w", product.ErrTransferExpired)
	b.amp.setListErr(expired, expiredErr)
	backdate(t, ctx, b, settled, time.Hour)
	backdate(t, ctx, b, expired, time.Hour)
	if err := reconcile(t, ctx, m, time.Minute, 24*time.Hour, 2); err != nil {
		t.Fatalf("ReconcileStale: %v", err)
	}
	if tr := transfer(t, ctx, m, settled); tr.SettleResult != connectrelay.SettleAlreadySettled || tr.SettledAt.IsZero() {
		t.Errorf("transfer = %+v, want settled by the product", tr)
	}

	// Expired on the import's own check too.
	b.amp.setListErr(expiredOnImport, expiredErr)
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, expiredOnImport, nil))
	handle(t, ctx, m, uploadEvent(t, expiredOnImport, "s3/final", "final"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import answered expired: %v, want nil (final)", err)
	}
	for _, tid := range []string{expired, expiredOnImport} {
		tr := transfer(t, ctx, m, tid)
		if tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed || tr.SettledAt.IsZero() ||
			tr.SettleResult != connectrelay.SettleExpired || !strings.Contains(tr.SettleError, "400") ||
			!strings.HasPrefix(tr.SettleMessage, "could not confirm uploaded data: ") {
			t.Errorf("transfer %s = %+v, want failed and recorded expired", tid, tr)
		}
	}
	for _, tid := range []string{settled, expired, expiredOnImport} {
		if got := b.amp.settleCalls(tid); len(got) != 0 {
			t.Errorf("settle calls for %s: %v", tid, got)
		}
	}
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 0 {
		t.Errorf("SettlePending = %d, %v; want nothing owed", n, err)
	}
	for _, tid := range []string{settled, expired, expiredOnImport} {
		backdate(t, ctx, b, tid, 48*time.Hour)
	}
	if err := reconcile(t, ctx, m, time.Minute, 24*time.Hour, 0); err != nil {
		t.Fatal(err)
	}
}

// Only transfers waiting for the SUCCESS check alone are examined: not those with
// uploads still to import, without an imported final upload, waiting for
// listener-triggered, or closed; and at most limit per call.
func TestReconcileStaleCandidates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const (
		stuck1, stuck2 = "transfer-stuck-1", "transfer-stuck-2"
		queued         = "transfer-queued"
		noFinal        = "transfer-no-final"
		waiting        = "transfer-waiting"
		succeeded      = "transfer-succeeded"
		cancelled      = "transfer-cancelled"
	)
	listErr := errors.New("product: 503")
	stuckOnList(t, ctx, b, m, stuck1, listErr)
	stuckOnList(t, ctx, b, m, stuck2, listErr)

	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, queued, nil))
	handle(t, ctx, m, uploadEvent(t, queued, "s3/final", "final"))
	handle(t, ctx, m, uploadEvent(t, queued, "s3/part", "part"))
	for _, r := range b.queue.take() {
		if r.S3Key == "s3/final" {
			if err := m.Import(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, noFinal, nil))
	handle(t, ctx, m, uploadEvent(t, noFinal, "s3/part", "part"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatal(err)
	}
	handle(t, ctx, m, uploadEvent(t, waiting, "s3/final", "final"))
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, succeeded, nil))
	handle(t, ctx, m, uploadEvent(t, succeeded, "s3/final", "final"))
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatal(err)
	}
	stuckOnList(t, ctx, b, m, cancelled, listErr)
	handle(t, ctx, m, mustEvent(t, migration.EventTransferCancellationRequested, cancelled, nil))

	others := []string{queued, noFinal, waiting, succeeded, cancelled}
	lists := map[string]int{}
	for _, tid := range append([]string{stuck1, stuck2}, others...) {
		backdate(t, ctx, b, tid, 48*time.Hour)
		lists[tid] = b.amp.listCount(tid)
	}
	n, err := m.ReconcileStale(ctx, time.Hour, 24*time.Hour, 1)
	if n != 1 || err != nil {
		t.Fatalf("ReconcileStale(limit 1) = %d, %v; want 1 examined and given up", n, err)
	}
	n, err = m.ReconcileStale(ctx, time.Hour, 24*time.Hour, 10)
	if n != 1 || err != nil {
		t.Fatalf("second ReconcileStale = %d, %v; want the other one", n, err)
	}
	for _, tid := range []string{stuck1, stuck2} {
		if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed {
			t.Errorf("transfer %s = %+v, want failed", tid, tr)
		}
	}
	for _, tid := range others {
		if got := b.amp.listCount(tid); got != lists[tid] {
			t.Errorf("transfer %s: ListData called %d more times", tid, got-lists[tid])
		}
	}
	if tr := transfer(t, ctx, m, queued); tr.State != connectrelay.TransferReady {
		t.Errorf("transfer with a queued upload = %+v, want open", tr)
	}
	if tr := transfer(t, ctx, m, noFinal); tr.State != connectrelay.TransferReady {
		t.Errorf("transfer without its final upload = %+v, want open", tr)
	}
}

// Two workers sweeping at once examine each transfer once and make one settle call
// per transfer: a claimed transfer is not examined again, neither while its
// product call runs nor after.
func TestConcurrentReconcilesSettleOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m1 := b.machine(t, nil, nil, migration.Options{})
	m2 := b.machine(t, nil, nil, migration.Options{})
	listErr := errors.New("product: 503")

	// One transfer, its list call held open while the second worker sweeps.
	const held = "transfer-reconcile-held"
	stuckOnList(t, ctx, b, m1, held, listErr)
	backdate(t, ctx, b, held, 48*time.Hour)
	inCall, release := make(chan struct{}), make(chan struct{})
	releaseCall := sync.OnceFunc(func() { close(release) })
	defer releaseCall()
	var (
		hmu     sync.Mutex
		holding bool
	)
	b.amp.hook = func(ctx context.Context, call, transferID string) error {
		if call != "ListData" || transferID != held {
			return nil
		}
		hmu.Lock()
		first := !holding
		holding = true
		hmu.Unlock()
		if first {
			close(inCall)
			<-release
		}
		return nil
	}
	first := make(chan error, 1)
	go func() {
		n, err := m1.ReconcileStale(ctx, time.Hour, 24*time.Hour, 10)
		if n != 1 {
			err = errors.Join(err, fmt.Errorf("examined %d transfers, want 1", n))
		}
		first <- err
	}()
	select {
	case <-inCall:
	case err := <-first:
		t.Fatalf("first worker did not ask the product: %v", err)
	}
	n, err := m2.ReconcileStale(ctx, time.Hour, 24*time.Hour, 10)
	if n != 0 || err != nil {
		t.Errorf("second worker while the first one's call runs = %d, %v; want 0 examined", n, err)
	}
	releaseCall()
	if err := <-first; err != nil {
		t.Fatalf("first worker: %v", err)
	}
	if got := b.amp.settleCalls(held); !cmp.Equal(got, []string{product.StatusFailed}) {
		t.Errorf("settle calls %v, want one FAILED", got)
	}

	// Several transfers, both workers at once.
	var tids []string
	for i := range 6 {
		tid := fmt.Sprintf("transfer-reconcile-race-%d", i)
		stuckOnList(t, ctx, b, m1, tid, listErr)
		backdate(t, ctx, b, tid, 48*time.Hour)
		tids = append(tids, tid)
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		total int
	)
	for _, m := range []*migration.Machine{m1, m2} {
		wg.Go(func() {
			<-start
			n, err := m.ReconcileStale(ctx, time.Hour, 24*time.Hour, 10)
			if err != nil {
				t.Errorf("ReconcileStale: %v", err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if total != len(tids) {
		t.Errorf("%d examinations, want %d (one per transfer)", total, len(tids))
	}
	for _, tid := range tids {
		if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
			t.Errorf("settle calls of %s: %v, want one FAILED", tid, got)
		}
	}
}
