package migration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/internal/migration"
)

func TestNewMachineValidates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := migration.NewMachine(nil, b.amp, b.rec, b.queue, migration.Options{}); err == nil {
		t.Error("nil pool accepted")
	}
	if _, err := migration.NewMachine(b.pool, nil, b.rec, b.queue, migration.Options{}); err == nil {
		t.Error("nil AMP accepted")
	}
	if _, err := migration.NewMachine(b.pool, b.amp, nil, b.queue, migration.Options{}); err == nil {
		t.Error("nil Importer accepted")
	}
	if _, err := migration.NewMachine(b.pool, b.amp, b.rec, nil, migration.Options{}); err == nil {
		t.Error("nil Scheduler accepted")
	}
	if _, err := migration.NewMachine(b.pool, b.amp, b.rec, b.queue,
		migration.Options{HeartbeatInterval: time.Second, LeaseTTL: time.Second}); err == nil {
		t.Error("LeaseTTL below twice HeartbeatInterval accepted")
	}
}

// An upload announced before listener-triggered is parked (nothing fetched, nothing
// scheduled) and imported once listener-triggered arrives; the final label settles.
func TestUploadBeforeListenerTriggeredIsParkedThenImported(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-parked"

	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "part-1"))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/b", "final"))
	if diff := cmp.Diff(map[string]migration.UploadState{"s3/a": migration.UploadParked, "s3/b": migration.UploadParked},
		uploadStates(t, ctx, m, tid)); diff != "" {
		t.Fatalf("uploads before listener-triggered (-want +got):\n%s", diff)
	}
	if refs := b.queue.take(); len(refs) != 0 {
		t.Fatalf("scheduled before listener-triggered: %+v", refs)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferWaiting {
		t.Fatalf("state = %s, want waiting", tr.State)
	}

	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	refs := b.queue.take()
	want := []migration.UploadRef{
		{ClientKey: tenant, TransferID: tid, S3Key: "s3/a", Label: "part-1"},
		{ClientKey: tenant, TransferID: tid, S3Key: "s3/b", Label: "final"},
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Fatalf("scheduled after listener-triggered (-want +got):\n%s", diff)
	}
	if b.amp.openCount("s3/a")+b.amp.openCount("s3/b") != 0 {
		t.Fatal("data fetched by the event handler")
	}
	for _, ref := range refs {
		if err := m.Import(ctx, ref); err != nil {
			t.Fatalf("Import(%s): %v", ref.S3Key, err)
		}
	}

	for _, k := range []string{"s3/a", "s3/b"} {
		if n := b.amp.openCount(k); n != 1 {
			t.Errorf("OpenData(%s) called %d times, want 1", k, n)
		}
	}
	recs, err := b.rec.Records(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("records = %+v, want 2", recs)
	}
	us, err := m.Uploads(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range us {
		size, sum := digest(t, content(u.S3Key, b.amp.size(u.S3Key)))
		if u.State != migration.UploadImported || u.SizeBytes != size || u.SHA256 != sum || u.Attempts != 1 {
			t.Errorf("upload %s = %+v; want imported, %d bytes, sha256 %s, 1 attempt", u.S3Key, u, size, sum)
		}
		r := recs[i]
		if r.S3Key != u.S3Key || r.SizeBytes != size || r.SHA256 != sum || r.Label != u.Label || r.ClientKey != tenant {
			t.Errorf("record %+v does not match upload %+v", r, u)
		}
	}
	wantCalls := []product.Progress{
		{Status: product.StatusInProgress, Percent: 50, Message: "imported 1 of 2 uploads"},
		{Status: product.StatusSuccess, Percent: 100, Message: "all uploaded data imported"},
	}
	if diff := cmp.Diff(wantCalls, b.amp.calls(tid)); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.State != connectrelay.TransferSucceeded || tr.SettleStatus != product.StatusSuccess ||
		tr.SettleResult != connectrelay.SettleReported || tr.SettledAt.IsZero() || tr.Details.MigrationID != "mig-"+tid {
		t.Errorf("transfer = %+v; want succeeded and settled SUCCESS", tr)
	}
	var handled int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM migration_events WHERE transfer_id = $1 AND outcome = 'handled'`,
		tid).Scan(&handled); err != nil || handled != 3 {
		t.Errorf("handled events = %d, %v; want 3", handled, err)
	}
}

// The same app-data-uploaded delivered 5 times, 3 of them concurrently, to a worker
// fleet that runs imports as soon as they are scheduled: one fetch, one import.
func TestDuplicateUploadEventsImportOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 60*time.Second)
	sched := &asyncScheduler{}
	m := b.machine(t, nil, sched, migration.Options{HeartbeatInterval: 50 * time.Millisecond})
	sched.m = m
	const tid = "transfer-dup"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	ev := uploadEvent(t, tid, "s3/dup", "part")

	handle(t, ctx, m, ev)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { handle(t, ctx, m, ev) })
	}
	wg.Wait()
	handle(t, ctx, m, ev)
	sched.wait(t)

	if n := b.amp.openCount("s3/dup"); n != 1 {
		t.Errorf("OpenData called %d times, want 1", n)
	}
	if n := b.count.count("s3/dup"); n != 1 {
		t.Errorf("Importer called %d times, want 1", n)
	}
	recs, err := b.rec.Records(ctx, tid)
	if err != nil || len(recs) != 1 {
		t.Errorf("records = %+v, %v; want 1", recs, err)
	}
	var rows, deliveries int
	if err := b.pool.QueryRow(ctx, `SELECT count(*), sum(deliveries) FROM migration_events WHERE transfer_id = $1 AND event_type = 'app-data-uploaded'`,
		tid).Scan(&rows, &deliveries); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || deliveries != 5 {
		t.Errorf("event rows = %d with %d deliveries, want 1 with 5", rows, deliveries)
	}
}

// Two workers (two Machines on one database) handle listener-triggered and
// app-data-uploaded of the same transfer at the same moment, for many transfers:
// every upload is imported exactly once, and never before listener-triggered.
func TestTwoWorkersRaceListenerAndUpload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 120*time.Second)
	s1, s2 := &asyncScheduler{}, &asyncScheduler{}
	opts := migration.Options{HeartbeatInterval: 50 * time.Millisecond}
	m1 := b.machine(t, nil, s1, opts)
	m2 := b.machine(t, nil, s2, opts)
	s1.m, s2.m = m1, m2

	const transfers = 15
	for i := range transfers {
		tid := fmt.Sprintf("race-%02d", i)
		key := "s3/" + tid
		listener := mustEvent(t, migration.EventListenerTriggered, tid, nil)
		upload := uploadEvent(t, tid, key, "final")
		start := make(chan struct{})
		var wg sync.WaitGroup
		// Alternate which worker gets which event; both get the upload twice.
		a, z := m1, m2
		if i%2 == 1 {
			a, z = m2, m1
		}
		wg.Go(func() { <-start; handle(t, ctx, a, listener) })
		wg.Go(func() { <-start; handle(t, ctx, z, upload) })
		wg.Go(func() { <-start; handle(t, ctx, a, upload) })
		close(start)
		wg.Wait()
	}
	s1.wait(t)
	s2.wait(t)

	for i := range transfers {
		tid := fmt.Sprintf("race-%02d", i)
		key := "s3/" + tid
		if n := b.amp.openCount(key); n != 1 {
			t.Errorf("%s: OpenData called %d times, want 1", tid, n)
		}
		if n := b.count.count(key); n != 1 {
			t.Errorf("%s: Importer called %d times, want 1", tid, n)
		}
		if st := uploadStates(t, ctx, m1, tid); st[key] != migration.UploadImported {
			t.Errorf("%s: upload state %s, want imported", tid, st[key])
		}
		if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
			t.Errorf("%s: settle calls %v, want one SUCCESS", tid, got)
		}
	}
	var records int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM migration_imported_data`).Scan(&records); err != nil || records != transfers {
		t.Errorf("imported records = %d, %v; want %d", records, err, transfers)
	}
}

// blockingImporter reads a little, tells the test it is mid-stream, then waits for
// its context to be cancelled.
type blockingImporter struct {
	started chan struct{}
	mu      sync.Mutex
	cause   error
}

func (bi *blockingImporter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	data := req.Data
	if _, err := io.CopyN(io.Discard, data, 1<<20); err != nil {
		return err
	}
	close(bi.started)
	<-ctx.Done()
	bi.mu.Lock()
	bi.cause = context.Cause(ctx)
	bi.mu.Unlock()
	// Reads fail from now on, whatever the importer does.
	if _, err := data.Read(make([]byte, 10)); err == nil {
		return errors.New("read succeeded after cancellation")
	}
	return ctx.Err()
}

// transfer-cancellation-requested while an import is mid-stream: the import's
// context is cancelled (in this process at once, in another within a heartbeat),
// INCOMPLETE is reported, and later uploads are skipped without being fetched.
func TestCancelMidImport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc         string
		otherProcess bool
	}{
		{"cancellation handled by the importing process", false},
		{"cancellation handled by another process", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := setup(t)
			ctx := ctxT(t, 60*time.Second)
			imp := &blockingImporter{started: make(chan struct{})}
			// The importing worker's heartbeat is slow unless the test needs it: in
			// the same process the registry must stop the import by itself.
			hb := 30 * time.Second
			if tc.otherProcess {
				hb = 100 * time.Millisecond
			}
			importer := b.machine(t, imp, nil, migration.Options{HeartbeatInterval: hb})
			canceller := importer
			if tc.otherProcess {
				canceller = b.machine(t, nil, nil, migration.Options{})
			}
			const tid = "transfer-cancel"
			b.amp.sizes["s3/big"] = 64 << 20
			handle(t, ctx, importer, mustEvent(t, migration.EventListenerTriggered, tid, nil))
			handle(t, ctx, importer, uploadEvent(t, tid, "s3/big", "part-1"))
			handle(t, ctx, importer, uploadEvent(t, tid, "s3/queued", "part-2"))
			refs := b.queue.take()
			if len(refs) != 2 {
				t.Fatalf("scheduled %+v, want 2", refs)
			}

			done := make(chan error, 1)
			go func() { done <- importer.Import(ctx, refs[0]) }()
			select {
			case <-imp.started:
			case err := <-done:
				t.Fatalf("Import returned before blocking: %v", err)
			}
			start := time.Now()
			handle(t, ctx, canceller, mustEvent(t, migration.EventTransferCancellationRequested, tid, nil))
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Import of a cancelled transfer: %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("import not stopped 10 s after the cancellation")
			}
			took := time.Since(start)
			t.Logf("import stopped %v after the cancellation was handled", took)
			if !tc.otherProcess && took > time.Second {
				t.Errorf("in-process cancellation took %v", took)
			}
			imp.mu.Lock()
			cause := imp.cause
			imp.mu.Unlock()
			if !errors.Is(cause, migration.ErrTransferStopped) {
				t.Errorf("importer's context cause = %v, want ErrTransferStopped", cause)
			}

			if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusIncomplete}) {
				t.Errorf("settle calls %v, want [INCOMPLETE]", got)
			}
			tr := transfer(t, ctx, importer, tid)
			if tr.State != connectrelay.TransferCancelled || tr.SettleResult != connectrelay.SettleReported {
				t.Errorf("transfer = %+v, want cancelled and settled", tr)
			}
			// The upload queued before the cancellation, and one announced after it,
			// are skipped without their data being fetched.
			if err := importer.Import(ctx, refs[1]); err != nil {
				t.Fatalf("Import of a skipped upload: %v", err)
			}
			handle(t, ctx, canceller, uploadEvent(t, tid, "s3/late", "final"))
			if refs := b.queue.take(); len(refs) != 0 {
				t.Errorf("upload after cancellation scheduled: %+v", refs)
			}
			want := map[string]migration.UploadState{
				"s3/big": migration.UploadSkipped, "s3/queued": migration.UploadSkipped, "s3/late": migration.UploadSkipped,
			}
			if diff := cmp.Diff(want, uploadStates(t, ctx, importer, tid)); diff != "" {
				t.Errorf("uploads (-want +got):\n%s", diff)
			}
			if n := b.amp.openCount("s3/queued") + b.amp.openCount("s3/late"); n != 0 {
				t.Errorf("skipped uploads fetched %d times", n)
			}
			if recs, _ := b.rec.Records(ctx, tid); len(recs) != 0 {
				t.Errorf("records of a cancelled import: %+v", recs)
			}
			// A re-delivered cancellation settles nothing twice.
			handle(t, ctx, canceller, mustEvent(t, migration.EventTransferCancellationRequested, tid, map[string]any{"messageId": "again"}))
			if got := b.amp.settleCalls(tid); len(got) != 1 {
				t.Errorf("settle calls after a re-delivery: %v", got)
			}
		})
	}
}

func TestListenerErroredSettlesFailed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc      string
		detailErr error
		want      string
	}{
		{"details fetched", nil, `{"exceptionType":"java.lang.IllegalStateException","safeStackTrace":"at Listener.run"}`},
		{"details unavailable", errors.New("product: 404"), `{"fetchError":"product: 404"}`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := setup(t)
			ctx := ctxT(t, 30*time.Second)
			b.amp.errDetailsE = tc.detailErr
			m := b.machine(t, nil, nil, migration.Options{})
			const tid = "transfer-errored"
			handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
			handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "part"))
			refs := b.queue.take()

			handle(t, ctx, m, mustEvent(t, migration.EventListenerErrored, tid, nil))
			tr := transfer(t, ctx, m, tid)
			if tr.State != connectrelay.TransferFailed || tr.SettleStatus != product.StatusFailed || tr.SettledAt.IsZero() {
				t.Errorf("transfer = %+v, want failed and settled FAILED", tr)
			}
			if string(tr.ErrorDetails) != tc.want {
				t.Errorf("error details = %s, want %s", tr.ErrorDetails, tc.want)
			}
			if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusFailed}) {
				t.Errorf("settle calls %v, want [FAILED]", got)
			}
			for _, ref := range refs {
				if err := m.Import(ctx, ref); err != nil {
					t.Fatal(err)
				}
			}
			if st := uploadStates(t, ctx, m, tid); st["s3/a"] != migration.UploadSkipped || b.amp.openCount("s3/a") != 0 {
				t.Errorf("upload of a failed transfer: %s, fetched %d times", st["s3/a"], b.amp.openCount("s3/a"))
			}
		})
	}
}

// The final label may be imported before other uploads: the transfer succeeds when
// the last of them is imported, and the percent reported only grows.
func TestFinalLabelSettlesSuccessWhateverTheOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{FinalLabel: "done"})
	const tid = "transfer-final"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	for _, k := range []string{"s3/1", "s3/2", "s3/final", "s3/3"} {
		label := "part"
		if k == "s3/final" {
			label = "done"
		}
		handle(t, ctx, m, uploadEvent(t, tid, k, label))
	}
	byKey := map[string]migration.UploadRef{}
	for _, r := range b.queue.take() {
		byKey[r.S3Key] = r
	}
	for _, k := range []string{"s3/final", "s3/2", "s3/1"} {
		if err := m.Import(ctx, byKey[k]); err != nil {
			t.Fatal(err)
		}
		if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady {
			t.Fatalf("after importing %s: state %s, want ready (s3/3 is not imported)", k, tr.State)
		}
	}
	if err := m.Import(ctx, byKey["s3/3"]); err != nil {
		t.Fatal(err)
	}
	want := []product.Progress{
		{Status: product.StatusInProgress, Percent: 25, Message: "imported 1 of 4 uploads"},
		{Status: product.StatusInProgress, Percent: 50, Message: "imported 2 of 4 uploads"},
		{Status: product.StatusInProgress, Percent: 75, Message: "imported 3 of 4 uploads"},
		{Status: product.StatusSuccess, Percent: 100, Message: "all uploaded data imported"},
	}
	if diff := cmp.Diff(want, b.amp.calls(tid)); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferSucceeded || tr.LastPercent != 75 {
		t.Errorf("transfer = %+v, want succeeded", tr)
	}
	// A label other than the final one never settles: a transfer without it stays open.
	const open = "transfer-no-final"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, open, nil))
	handle(t, ctx, m, uploadEvent(t, open, "s3/x", "final"))
	b.queue.drain(t, ctx, m)
	if tr := transfer(t, ctx, m, open); tr.State != connectrelay.TransferReady || len(b.amp.settleCalls(open)) != 0 {
		t.Errorf("transfer without the final label = %+v, settle calls %v", tr, b.amp.settleCalls(open))
	}
}

// Once the product says a transfer is settled, that is final: recorded, never
// retried, and nothing more is fetched for it.
func TestSettledAnswerIsFinal(t *testing.T) {
	t.Parallel()
	t.Run("progress answered settled", func(t *testing.T) {
		b := setup(t)
		ctx := ctxT(t, 30*time.Second)
		m := b.machine(t, nil, nil, migration.Options{})
		const tid = "transfer-settled-elsewhere"
		b.amp.settled[tid] = product.StatusFailed // settled by someone else
		handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
		handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "part"))
		handle(t, ctx, m, uploadEvent(t, tid, "s3/b", "part"))
		refs := b.queue.take()
		if err := m.Import(ctx, refs[0]); err != nil {
			t.Fatalf("Import: %v", err)
		}
		tr := transfer(t, ctx, m, tid)
		if tr.SettleResult != connectrelay.SettleAlreadySettled || tr.SettledAt.IsZero() || tr.SettleStatus != "" {
			t.Fatalf("transfer = %+v, want settled by the product", tr)
		}
		if err := m.Import(ctx, refs[1]); err != nil {
			t.Fatal(err)
		}
		handle(t, ctx, m, uploadEvent(t, tid, "s3/c", "final"))
		if n := b.amp.openCount("s3/b") + b.amp.openCount("s3/c"); n != 0 {
			t.Errorf("uploads of a settled transfer fetched %d times", n)
		}
		want := map[string]migration.UploadState{"s3/a": migration.UploadImported, "s3/b": migration.UploadSkipped, "s3/c": migration.UploadSkipped}
		if diff := cmp.Diff(want, uploadStates(t, ctx, m, tid)); diff != "" {
			t.Errorf("uploads (-want +got):\n%s", diff)
		}
		if n := len(b.amp.calls(tid)); n != 1 {
			t.Errorf("%d progress calls, want the single one answered settled", n)
		}
	})
	t.Run("settle answered settled", func(t *testing.T) {
		b := setup(t)
		ctx := ctxT(t, 30*time.Second)
		m := b.machine(t, nil, nil, migration.Options{})
		const tid = "transfer-settle-403"
		b.amp.settled[tid] = product.StatusSuccess
		ev := mustEvent(t, migration.EventTransferCancellationRequested, tid, nil)
		handle(t, ctx, m, ev)
		handle(t, ctx, m, ev)
		tr := transfer(t, ctx, m, tid)
		if tr.State != connectrelay.TransferCancelled || tr.SettleResult != connectrelay.SettleAlreadySettled {
			t.Errorf("transfer = %+v, want cancelled, already settled", tr)
		}
		if n := len(b.amp.calls(tid)); n != 1 {
			t.Errorf("%d settle calls, want 1 (the settled answer is final)", n)
		}
	})
	t.Run("settle failure is retried", func(t *testing.T) {
		b := setup(t)
		ctx := ctxT(t, 30*time.Second)
		m := b.machine(t, nil, nil, migration.Options{})
		const tid = "transfer-settle-5xx"
		b.amp.progressErr, b.amp.progressErrN = errors.New("product: 503"), 1
		handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
		handle(t, ctx, m, uploadEvent(t, tid, "s3/final", "final"))
		ref := b.queue.take()[0]
		if err := m.Import(ctx, ref); err == nil {
			t.Fatal("Import succeeded although the SUCCESS settle failed")
		}
		tr := transfer(t, ctx, m, tid)
		if tr.State != connectrelay.TransferSucceeded || !tr.SettledAt.IsZero() || tr.SettleError != "product: 503" {
			t.Fatalf("transfer = %+v, want succeeded with the settle owed", tr)
		}
		// The task's retry: nothing is imported again, the settle is made.
		if err := m.Import(ctx, ref); err != nil {
			t.Fatalf("retried Import: %v", err)
		}
		if n := b.count.count("s3/final"); n != 1 {
			t.Errorf("Importer called %d times, want 1", n)
		}
		tr = transfer(t, ctx, m, tid)
		if tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported || tr.SettleError != "" {
			t.Errorf("transfer = %+v, want settled", tr)
		}
		if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
			t.Errorf("settle calls %v", got)
		}
	})
}

// crashingImporter runs the recording importer, then "dies" (panics) before the
// machine can record the upload imported, the first time only.
type crashingImporter struct {
	next    connectrelay.Importer
	mu      sync.Mutex
	crashed bool
	calls   int
}

func (c *crashingImporter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	if err := c.next.Import(ctx, req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if !c.crashed {
		c.crashed = true
		panic("worker killed")
	}
	return nil
}

// A worker killed between the import and its "imported" mark: the upload's lease
// keeps other workers off until it expires, then the retry imports again and the
// recording importer does not record a second time.
func TestWorkerKilledBetweenImportAndMark(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	imp := &crashingImporter{next: b.rec}
	m := b.machine(t, imp, nil, migration.Options{HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second})
	const tid = "transfer-crash"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "final"))
	ref := b.queue.take()[0]

	func() {
		defer func() {
			if r := recover(); r != "worker killed" {
				t.Fatalf("recovered %v, want the simulated crash", r)
			}
		}()
		_ = m.Import(ctx, ref)
		t.Fatal("Import returned instead of crashing")
	}()
	if st := uploadStates(t, ctx, m, tid); st["s3/a"] != migration.UploadImporting {
		t.Fatalf("after the crash the upload is %s, want importing", st["s3/a"])
	}
	if err := m.Import(ctx, ref); !errors.Is(err, migration.ErrImportInProgress) {
		t.Fatalf("Import while the dead worker's lease lives: %v, want ErrImportInProgress", err)
	}
	time.Sleep(2200 * time.Millisecond)
	if err := m.Import(ctx, ref); err != nil {
		t.Fatalf("Import after the lease expired: %v", err)
	}
	if imp.calls != 2 {
		t.Errorf("importer completed %d times, want 2 (the crash re-runs it once)", imp.calls)
	}
	recs, err := b.rec.Records(ctx, tid)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records = %+v, %v; want exactly 1", recs, err)
	}
	us, _ := m.Uploads(ctx, tid)
	if us[0].State != migration.UploadImported || us[0].Attempts != 2 || us[0].SHA256 != recs[0].SHA256 {
		t.Errorf("upload = %+v, want imported after 2 attempts with the recorded digest", us[0])
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v", got)
	}
}

func TestUnknownEventIsRecordedOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	ev := mustEvent(t, "transfer-paused", "transfer-unknown", map[string]any{"messageId": "m-1", "future": true})
	handle(t, ctx, m, ev)
	var (
		typ, outcome string
		known        bool
		raw          string
	)
	if err := b.pool.QueryRow(ctx, `SELECT event_type, outcome, known, raw::text FROM migration_events WHERE dedupe_key = 'msg:m-1'`).
		Scan(&typ, &outcome, &known, &raw); err != nil {
		t.Fatal(err)
	}
	if typ != "transfer-paused" || outcome != "unknown" || known || raw != string(ev.Raw) {
		t.Errorf("recorded %s/%s/%v/%s", typ, outcome, known, raw)
	}
	if _, err := m.Transfer(ctx, tenant, "transfer-unknown"); !errors.Is(err, migration.ErrTransferNotFound) {
		t.Errorf("unknown event created a transfer: %v", err)
	}
	if len(b.amp.calls("transfer-unknown")) != 0 || len(b.queue.take()) != 0 {
		t.Error("unknown event had effects")
	}
}

// Raw bodies that jsonb would refuse (\u0000, lone surrogates) are still recorded.
func TestEventsWithUnusualJSONAreRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	body := `{"eventType":"listener-triggered","transferId":"t-odd","migrationDetails":{"name":"a\u0000b\ud800","jiraClientKey":"` + tenant + `"}}`
	ev, err := migration.ParseEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	handle(t, ctx, m, ev)
	tr := transfer(t, ctx, m, "t-odd")
	if tr.State != connectrelay.TransferReady || string(tr.Details.Raw) != `{"name":"a\u0000b\ud800","jiraClientKey":"`+tenant+`"}` {
		t.Errorf("transfer = %+v", tr)
	}
}

func TestTenantMismatchIsRejected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-tenant"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))

	// A tenant not named in migrationDetails.
	if err := m.HandleEvent(ctx, otherTenant, mustEvent(t, migration.EventTransferCancellationRequested, tid, nil)); !errors.Is(err, migration.ErrTenantMismatch) {
		t.Errorf("HandleEvent from a tenant not in migrationDetails: %v, want ErrTenantMismatch", err)
	}
	// A tenant named in its own event's details, but the transfer is another's.
	body := eventJSON(migration.EventTransferCancellationRequested, tid, map[string]any{
		"migrationDetails": map[string]any{"jiraClientKey": otherTenant},
	})
	ev, err := migration.ParseEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.HandleEvent(ctx, otherTenant, ev); !errors.Is(err, migration.ErrTenantMismatch) {
		t.Errorf("HandleEvent for another tenant's transfer: %v, want ErrTenantMismatch", err)
	}
	if tr := transfer(t, ctx, m, tid); tr.State != connectrelay.TransferReady {
		t.Errorf("state %s after rejected events, want ready", tr.State)
	}
	if _, err := m.Transfer(ctx, otherTenant, tid); !errors.Is(err, migration.ErrTransferNotFound) {
		t.Errorf("Transfer for another tenant: %v, want ErrTransferNotFound", err)
	}
	var rejected int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM migration_events WHERE outcome = 'rejected' AND client_key = $1`,
		otherTenant).Scan(&rejected); err != nil || rejected != 2 {
		t.Errorf("rejected events recorded = %d, %v; want 2", rejected, err)
	}
	// An import task naming another tenant is refused too.
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "part"))
	ref := b.queue.take()[0]
	ref.ClientKey = otherTenant
	if err := m.Import(ctx, ref); !errors.Is(err, migration.ErrTenantMismatch) {
		t.Errorf("Import for another tenant: %v, want ErrTenantMismatch", err)
	}
}

// Scheduling fails after the commit: the event's retry schedules the upload that
// stayed queued.
func TestSchedulingFailureIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-sched"
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "final"))
	b.queue.fail = errors.New("redis: connection refused")
	listener := mustEvent(t, migration.EventListenerTriggered, tid, nil)
	if err := m.HandleEvent(ctx, tenant, listener); err == nil {
		t.Fatal("HandleEvent succeeded although scheduling failed")
	}
	if st := uploadStates(t, ctx, m, tid); st["s3/a"] != migration.UploadQueued {
		t.Fatalf("upload %s, want queued", st["s3/a"])
	}
	handle(t, ctx, m, listener)
	if refs := b.queue.take(); len(refs) != 1 || refs[0].S3Key != "s3/a" {
		t.Fatalf("retry scheduled %+v", refs)
	}
}

func TestImportErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-errors"
	handle(t, ctx, m, uploadEvent(t, tid, "s3/parked", "part"))
	if err := m.Import(ctx, migration.UploadRef{ClientKey: tenant, TransferID: tid, S3Key: "s3/parked"}); !errors.Is(err, migration.ErrTransferNotReady) {
		t.Errorf("Import of a parked upload: %v, want ErrTransferNotReady", err)
	}
	if err := m.Import(ctx, migration.UploadRef{TransferID: tid, S3Key: "s3/none"}); !errors.Is(err, migration.ErrUploadNotFound) {
		t.Errorf("Import of an unknown upload: %v, want ErrUploadNotFound", err)
	}
	if err := m.Import(ctx, migration.UploadRef{TransferID: "nope", S3Key: "s3/none"}); !errors.Is(err, migration.ErrUploadNotFound) {
		t.Errorf("Import of an unknown transfer: %v, want ErrUploadNotFound", err)
	}

	// A failing download: the upload goes back to queued with the error, and the
	// retry imports it.
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	ref := b.queue.take()[0]
	openErr := errors.New("presigned URL: 500")
	b.amp.openErr = openErr
	if err := m.Import(ctx, ref); !errors.Is(err, openErr) {
		t.Fatalf("Import with a failing download: %v, want it wrapped", err)
	}
	us, _ := m.Uploads(ctx, tid)
	if us[0].State != migration.UploadQueued || us[0].Attempts != 1 || us[0].LastError == "" || !us[0].LeaseUntil.IsZero() {
		t.Errorf("upload after a failed attempt = %+v", us[0])
	}
	b.amp.openErr = nil
	if err := m.Import(ctx, ref); err != nil {
		t.Fatal(err)
	}
	us, _ = m.Uploads(ctx, tid)
	if us[0].State != migration.UploadImported || us[0].Attempts != 2 || us[0].LastError != "" {
		t.Errorf("upload after the retry = %+v", us[0])
	}

	// The product answers the data call with "settled": final, the upload is skipped.
	const tid2 = "transfer-data-403"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid2, nil))
	handle(t, ctx, m, uploadEvent(t, tid2, "s3/x", "part"))
	b.amp.openErr = fmt.Errorf("403: %w", product.ErrTransferSettled)
	if err := m.Import(ctx, b.queue.take()[0]); err != nil {
		t.Fatalf("Import answered settled: %v", err)
	}
	if tr := transfer(t, ctx, m, tid2); tr.SettleResult != connectrelay.SettleAlreadySettled {
		t.Errorf("transfer = %+v, want settled by the product", tr)
	}
	if st := uploadStates(t, ctx, m, tid2); st["s3/x"] != migration.UploadSkipped {
		t.Errorf("upload %s, want skipped", st["s3/x"])
	}
}

// A shutting-down worker (its context cancelled mid-import) puts the upload back
// in the queue instead of skipping it.
func TestWorkerShutdownRequeues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	imp := &blockingImporter{started: make(chan struct{})}
	m := b.machine(t, imp, nil, migration.Options{})
	const tid = "transfer-shutdown"
	b.amp.sizes["s3/a"] = 8 << 20
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "final"))
	ref := b.queue.take()[0]
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Import(wctx, ref) }()
	select {
	case <-imp.started:
	case err := <-done:
		t.Fatalf("Import returned before blocking: %v", err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Import on shutdown: %v, want context.Canceled", err)
	}
	us, _ := m.Uploads(ctx, tid)
	if us[0].State != migration.UploadQueued || !us[0].LeaseUntil.IsZero() {
		t.Errorf("upload after shutdown = %+v, want queued without lease", us[0])
	}
}

func TestStatusQueries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	for i := range 3 {
		handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, fmt.Sprintf("q-%d", i), nil))
	}
	ts, err := m.Transfers(ctx, tenant, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].TransferID != "q-2" || ts[1].TransferID != "q-1" {
		t.Errorf("Transfers(limit 2) = %+v, want q-2, q-1", ts)
	}
	if ts, err := m.Transfers(ctx, otherTenant, 0); err != nil || len(ts) != 0 {
		t.Errorf("Transfers of another tenant = %+v, %v", ts, err)
	}
	tr := transfer(t, ctx, m, "q-0")
	if tr.ClientKey != tenant || tr.State != connectrelay.TransferReady || tr.ReadyAt.IsZero() ||
		tr.Details.JiraClientKey != tenant || tr.Details.CreatedAt != 1702530783417 {
		t.Errorf("Transfer = %+v", tr)
	}
	if us, err := m.Uploads(ctx, "q-0"); err != nil || len(us) != 0 {
		t.Errorf("Uploads = %+v, %v", us, err)
	}
	// The status types are what an admin endpoint serves.
	if _, err := json.Marshal(tr); err != nil {
		t.Error(err)
	}
}
