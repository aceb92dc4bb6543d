package migration_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// setupSmallPool is setup with a pool of maxConns connections; it also returns the
// database's URL, for connections outside the pool.
func setupSmallPool(t *testing.T, maxConns int32) (*bundle, string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	url := testenv.PostgresURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	rec := migration.NewRecordingImporter(pool)
	return &bundle{pool: pool, amp: newFakeAMP(), rec: rec, count: newCounting(rec), queue: &queueScheduler{}}, url
}

// owesSettle makes tid a cancelled transfer whose INCOMPLETE settle call failed
// (product 503), so a settle call is owed.
func owesSettle(t *testing.T, ctx context.Context, b *bundle, m *migration.Machine, tid string) {
	t.Helper()
	b.amp.mu.Lock()
	b.amp.progressErr, b.amp.progressErrN = errors.New("product: 503"), 1
	b.amp.mu.Unlock()
	if err := m.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid, nil)); err == nil {
		t.Fatal("HandleEvent succeeded although the settle call failed")
	}
	if tr := transfer(t, ctx, m, tid); tr.SettleStatus != product.StatusIncomplete || !tr.SettledAt.IsZero() {
		t.Fatalf("transfer = %+v, want a settle call owed", tr)
	}
}

// The settle call is made with no transaction, lock or connection held. With a
// pool of 2 connections, another task of the transfer waits on the transfer's row
// (holding one connection) while the product call itself needs a connection (the
// real AMP client looks the tenant up in Postgres): holding the row lock and a
// connection over the call deadlocks the pool until the call gives up.
func TestSettleCallHoldsNoLockOrConnection(t *testing.T) {
	t.Parallel()
	b, url := setupSmallPool(t, 2)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-settle-pool"
	owesSettle(t, ctx, b, m, tid)

	observer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(context.Background())

	var (
		once       sync.Once
		otherTask  = make(chan error, 1)
		hookErr    error
		otherState string
	)
	b.amp.hook = func(hctx context.Context, call, transferID string) error {
		if call != "ReportProgress" || transferID != tid {
			return nil
		}
		once.Do(func() {
			// Another task of the transfer takes the transfer's row.
			go func() {
				otherTask <- pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `SELECT 1 FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE`, tid)
					return err
				})
			}()
			// Until it either got the row or waits for it.
			otherState = "running"
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				select {
				case err := <-otherTask:
					otherTask <- err
					otherState = "done"
				default:
				}
				var waiting int
				if err := observer.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
					hookErr = err
					return
				}
				if waiting > 0 {
					otherState = "waiting for the row lock"
				}
				if otherState != "running" {
					break
				}
			}
			// The AMP client needs a connection of the same pool.
			qctx, cancel := context.WithTimeout(hctx, 3*time.Second)
			defer cancel()
			var one int
			if err := b.pool.QueryRow(qctx, `SELECT 1`).Scan(&one); err != nil {
				hookErr = fmt.Errorf("AMP client's tenant lookup (other task %s): %w", otherState, err)
			}
		})
		return hookErr
	}

	done := make(chan error, 1)
	go func() {
		n, err := m.SettlePending(ctx, 10)
		if err == nil && n != 1 {
			err = fmt.Errorf("SettlePending attempted %d transfers, want 1", n)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SettlePending: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("SettlePending hangs: pool exhausted")
	}
	t.Logf("the other task was %s when the AMP call needed a connection", otherState)
	if err := <-otherTask; err != nil {
		t.Errorf("other task of the transfer: %v", err)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported || tr.SettleError != "" {
		t.Errorf("transfer = %+v, want settled", tr)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusIncomplete}) {
		t.Errorf("settle calls %v, want one INCOMPLETE", got)
	}
}

// Two workers racing to settle one transfer make one call: while the first one's
// call is in flight, the second finds the settle claimed and returns at once (it
// does not wait for the call), and once the call is recorded nobody calls again.
func TestRacingSettlesMakeOneCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m1 := b.machine(t, nil, nil, migration.Options{})
	m2 := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-settle-race"
	owesSettle(t, ctx, b, m1, tid)

	inCall, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b.amp.hook = func(ctx context.Context, call, transferID string) error {
		if call == "ReportProgress" {
			once.Do(func() {
				close(inCall)
				<-release
			})
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { _, err := m1.SettlePending(ctx, 10); first <- err }()
	<-inCall

	// A re-delivered cancellation reaches the second worker mid-call: it owes a
	// settle call too, and must neither make it nor wait for the first.
	second := make(chan error, 1)
	go func() {
		second <- m2.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid,
			map[string]any{"messageId": "again"}))
	}()
	select {
	case err := <-second:
		if err != nil {
			t.Errorf("second worker: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("second worker waited for the first one's settle call")
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := m2.SettlePending(sctx, 10); err != nil || n != 0 {
		t.Errorf("SettlePending while the call is claimed = %d, %v; want 0 attempted", n, err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first worker: %v", err)
	}
	select {
	case <-second:
	default:
	}
	if err := m2.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid,
		map[string]any{"messageId": "third"})); err != nil {
		t.Errorf("event after the settle: %v", err)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusIncomplete}) {
		t.Errorf("settle calls %v, want exactly one INCOMPLETE", got)
	}
	tr := transfer(t, ctx, m1, tid)
	if tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want settled", tr)
	}
}

// A worker that dies during the settle call leaves a claim: nobody calls while it
// lives, and once it expired the settle sweep makes the call.
func TestCrashedSettleClaimExpiresAndIsSwept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-settle-crash"
	owesSettle(t, ctx, b, m, tid)

	var once sync.Once
	b.amp.hook = func(ctx context.Context, call, transferID string) error {
		if call == "ReportProgress" {
			once.Do(func() { panic("worker killed") })
		}
		return nil
	}
	func() {
		defer func() {
			if r := recover(); r != "worker killed" {
				t.Fatalf("recovered %v, want the simulated crash", r)
			}
		}()
		_, _ = m.SettlePending(ctx, 10)
		t.Fatal("SettlePending returned instead of crashing")
	}()

	// The dead worker's claim is live: nobody makes the call.
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 0 {
		t.Errorf("SettlePending under a live claim = %d, %v; want 0", n, err)
	}
	if err := m.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid,
		map[string]any{"messageId": "again"})); err != nil {
		t.Errorf("event under a live claim: %v", err)
	}
	if got := b.amp.settleCalls(tid); len(got) != 0 {
		t.Fatalf("settle calls under a live claim: %v", got)
	}
	// Three minutes later the claim has expired.
	if _, err := b.pool.Exec(ctx, `UPDATE migration_transfers
		SET settle_claimed_until = settle_claimed_until - interval '4 minutes' WHERE transfer_id = $1`, tid); err != nil {
		t.Fatal(err)
	}
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 1 {
		t.Fatalf("SettlePending after the claim expired = %d, %v; want 1", n, err)
	}
	if got := b.amp.settleCalls(tid); !cmp.Equal(got, []string{product.StatusIncomplete}) {
		t.Errorf("settle calls %v, want one INCOMPLETE", got)
	}
	if tr := transfer(t, ctx, m, tid); tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %+v, want settled", tr)
	}
}

// The product answers a settle call of a transfer past its 14 days with 400: that
// is final, recorded as expired (with a warning), and never retried.
func TestExpiredSettleIsFinal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	var logs testenv.LogBuffer
	m := b.machine(t, nil, nil, migration.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const tid = "transfer-expired"
	b.amp.progressErr, b.amp.progressErrN = fmt.Errorf("product: 400 Bad Request: %w", product.ErrTransferExpired), -1

	if err := m.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid, nil)); err != nil {
		t.Fatalf("HandleEvent: %v, want nil (expired is final)", err)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.SettleResult != connectrelay.SettleExpired || tr.SettledAt.IsZero() || tr.SettleStatus != product.StatusIncomplete ||
		!strings.Contains(tr.SettleError, "400") {
		t.Errorf("transfer = %+v, want settled as expired with the answer recorded", tr)
	}
	if !tr.Closed() {
		t.Error("expired transfer not closed")
	}
	if n, err := m.SettlePending(ctx, 10); err != nil || n != 0 {
		t.Errorf("SettlePending = %d, %v; want nothing owed", n, err)
	}
	if err := m.HandleEvent(ctx, tenant, mustEvent(t, migration.EventTransferCancellationRequested, tid,
		map[string]any{"messageId": "again"})); err != nil {
		t.Errorf("re-delivered event: %v", err)
	}
	b.amp.mu.Lock()
	left := b.amp.progressErrN
	b.amp.mu.Unlock()
	if calls := -1 - left; calls != 1 {
		t.Errorf("%d settle calls, want 1", calls)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "expired") {
		t.Errorf("no warning about the expired transfer in:\n%s", out)
	}
}

// The product's "already settled" answer to a progress report is recorded even
// when the worker's context ends at that moment (it is shutting down): the write
// runs under a detached, bounded context.
func TestSettledByProductIsRecordedDuringShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t, 30*time.Second)
	m := b.machine(t, nil, nil, migration.Options{})
	const tid = "transfer-settled-shutdown"
	handle(t, ctx, m, mustEvent(t, migration.EventListenerTriggered, tid, nil))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/a", "part"))
	handle(t, ctx, m, uploadEvent(t, tid, "s3/b", "part"))
	refs := b.queue.take()

	wctx, shutdown := context.WithCancel(ctx)
	defer shutdown()
	b.amp.hook = func(ctx context.Context, call, transferID string) error {
		if call != "ReportProgress" {
			return nil
		}
		shutdown()
		return fmt.Errorf("product: 403 transfer is in a settled state: %w", product.ErrTransferSettled)
	}
	if err := m.Import(wctx, refs[0]); err != nil {
		t.Fatalf("Import: %v", err)
	}
	tr := transfer(t, ctx, m, tid)
	if tr.SettleResult != connectrelay.SettleAlreadySettled || tr.SettledAt.IsZero() {
		t.Errorf("transfer = %+v, want settled by the product", tr)
	}
	if st := uploadStates(t, ctx, m, tid); st["s3/b"] != migration.UploadSkipped {
		t.Errorf("open upload %s, want skipped", st["s3/b"])
	}
}
