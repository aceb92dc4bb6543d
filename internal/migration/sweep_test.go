package migration_test

import (
	"errors"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/internal/migration"
)

func TestSettlePending_MakesTheSettleCallsStillOwed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const owed, open = "transfer-owed", "transfer-open"
	// The SUCCESS settle fails (product 503) and the import task gives up.
	b.amp.progressErr, b.amp.progressErrN = errors.New("product: 503"), 1
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, owed, nil))
	handle(t, ctx, m, uploadEvent(t, owed, "s3/final", "final"))
	if err := m.Import(ctx, b.queue.take()[0]); err == nil {
		t.Fatal("Import succeeded although the settle failed")
	}
	// Another transfer is still open: nothing is owed for it.
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, open, nil))

	n, err := m.SettlePending(ctx, 10)
	if err != nil || n != 1 {
		t.Fatalf("SettlePending = %d, %v; want 1 attempted, no error", n, err)
	}
	tr := transfer(t, ctx, m, owed)
	if tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want settled by the sweep", tr)
	}
	if got := b.amp.settleCalls(owed); !cmp.Equal(got, []string{product.StatusSuccess}) {
		t.Errorf("settle calls %v, want one SUCCESS", got)
	}
	if got := b.amp.settleCalls(open); len(got) != 0 {
		t.Errorf("open transfer settled: %v", got)
	}
	// Nothing left: a second sweep does nothing.
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 0 {
		t.Errorf("second SettlePending = %d, %v; want 0", n, err)
	}
}
