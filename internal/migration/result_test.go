package migration_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// fastBackend hands every upload over, and reports its result before Import
// returns, as a backend that answers 202 and reports at once can: before the
// worker has recorded the hand-over.
type fastBackend struct {
	m      *migration.Machine
	during error // what ReportResult answered while the upload was importing
}

func (f *fastBackend) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	_, _ = io.Copy(io.Discard, req.Data)
	ref := migration.UploadRef{ClientKey: req.Transfer.ClientKey, TransferID: req.Transfer.TransferID, S3Key: req.S3Key, Label: req.Label}
	f.during = f.m.ReportResult(ctx, ref, true, "")
	return connectrelay.ErrImportPending
}

func TestReportResult_BeforeTheHandOverIsRecordedIsRetriedNotRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	backend := &fastBackend{}
	m := b.machine(t, backend, nil, migration.Options{})
	backend.m = m
	const tid = "transfer-fast-backend"

	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "final"))
	refs := b.queue.take()
	if len(refs) != 1 {
		t.Fatalf("scheduled %+v, want one upload", refs)
	}
	if err := m.Import(ctx, refs[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if !errors.Is(backend.during, migration.ErrUploadHandingOver) {
		t.Fatalf("ReportResult during the hand-over = %v, want ErrUploadHandingOver (transient)", backend.during)
	}
	if got := uploadStates(t, ctx, m, tid)["s3/a"]; got != migration.UploadPending {
		t.Fatalf("upload %s after the hand-over, want pending", got)
	}
	// The retry of the queued result, once the hand-over is recorded.
	if err := m.ReportResult(ctx, refs[0], true, ""); err != nil {
		t.Fatalf("ReportResult after the hand-over: %v", err)
	}
	if got := uploadStates(t, ctx, m, tid)["s3/a"]; got != migration.UploadImported {
		t.Errorf("upload %s after the result, want imported", got)
	}
}
