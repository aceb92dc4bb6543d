package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// MigrationRunner is the transfer state machine as the worker drives it.
type MigrationRunner interface {
	HandleEvent(ctx context.Context, clientKey string, ev migration.Event) error
	Import(ctx context.Context, ref migration.UploadRef) error
	FailUpload(ctx context.Context, ref migration.UploadRef, cause error) error
	SettlePending(ctx context.Context, limit int) (int, error)
	RequeueStale(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	ReconcileStale(ctx context.Context, olderThan, giveUpAfter time.Duration, limit int) (int, error)
}

// Deduper claims an event key for processing (see package dedupe).
type Deduper interface {
	Claim(ctx context.Context, key string) (*dedupe.Claim, error)
}

// MigrationDeps are what the migration task handlers need.
type MigrationDeps struct {
	Runner MigrationRunner
	Dedupe Deduper
}

// migrationEvent processes one AMP event at most once per dedupe key: the claim
// keeps two workers from running the same event at once (a duplicate that slipped
// past the receiver), and the done marker keeps a re-run after a crash from
// repeating its side effects.
func (w *Worker) migrationEvent(ctx context.Context, t *asynq.Task) error {
	m := w.d.Migration
	if m.Runner == nil || m.Dedupe == nil {
		return fmt.Errorf("migration tasks are not configured on this worker: %w", asynq.SkipRetry)
	}
	var p MigrationEventPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ClientKey == "" {
		return fmt.Errorf("%s: bad payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	ev, err := migration.ParseEvent(p.Event)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	// Scoped to the tenant, as the enqueue-side TaskID is.
	key := p.ClientKey + ":" + ev.DedupeKey()
	claim, err := m.Dedupe.Claim(ctx, key)
	switch {
	case errors.Is(err, dedupe.ErrAlreadyDone):
		w.d.Logger.InfoContext(ctx, "migration event already processed", slog.String("dedupe_key", key))
		return nil
	case errors.Is(err, dedupe.ErrInProgress):
		return &RetryLater{After: 10 * time.Second, Err: err}
	case err != nil:
		return fmt.Errorf("claim %s: %w", key, err)
	}
	if err := m.Runner.HandleEvent(ctx, p.ClientKey, ev); err != nil {
		// Let a retry (or another worker) take the event at once rather than
		// wait for the claim to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = claim.Release(rctx)
		return permanent(fmt.Errorf("%s %s of transfer %s: %w", t.Type(), ev.Type, ev.TransferID, err))
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := claim.Done(dctx); err != nil {
		// The effects are recorded in Postgres and idempotent there; a re-run
		// would find them done. Log rather than fail the task.
		w.d.Logger.WarnContext(ctx, "could not mark migration event done", slog.String("dedupe_key", key), slog.String("error", err.Error()))
	}
	return nil
}

func (w *Worker) migrationImport(ctx context.Context, t *asynq.Task) error {
	m := w.d.Migration
	if m.Runner == nil {
		return fmt.Errorf("migration tasks are not configured on this worker: %w", asynq.SkipRetry)
	}
	var p ImportPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ClientKey == "" || p.TransferID == "" || p.S3Key == "" {
		return fmt.Errorf("%s: bad payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	ref := migration.UploadRef{ClientKey: p.ClientKey, TransferID: p.TransferID, S3Key: p.S3Key, Label: p.Label}
	err := m.Runner.Import(ctx, ref)
	if errors.Is(err, migration.ErrImportInProgress) {
		// Another worker holds the upload's lease; look again after it would
		// have expired, without counting a failure.
		return &RetryLater{After: 30 * time.Second, Err: err}
	}
	if err == nil {
		return nil
	}
	err = permanent(fmt.Errorf("import %s of transfer %s: %w", p.S3Key, p.TransferID, err))
	if errors.Is(ctx.Err(), context.Canceled) {
		// The worker is shutting down: asynq has put the task back in its
		// queue, so this was not the last attempt whatever the retry count.
		return err
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
		// This task will not run again: fail the upload (and so the transfer)
		// rather than leave it queued until AMP's 14-day window ends.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if ferr := m.Runner.FailUpload(fctx, ref, err); ferr != nil {
			w.d.Logger.ErrorContext(ctx, "could not mark the upload failed", slog.String("transfer_id", p.TransferID),
				slog.String("s3_key", p.S3Key), slog.String("error", ferr.Error()))
			// The upload stays queued; if this attempt was the last, the sweep
			// (RequeueStale) schedules it again later.
			return permanent(ferr)
		}
	}
	return err
}

// SettleSweepSchedule is how often the worker makes the settle calls still owed
// to the product (a transfer finished here while the product was unreachable).
const SettleSweepSchedule = "@every 5m"

// SettleSweepTask is the scheduled settle sweep, unique across workers and
// bounded so one slow run does not overlap the next.
func SettleSweepTask() (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeSettleSweep, nil),
		[]asynq.Option{asynq.Queue(QueueMaintenance), asynq.Unique(4 * time.Minute), asynq.MaxRetry(0), asynq.Timeout(4 * time.Minute)}
}

// TypeSettleSweep makes the settle calls still owed to the product.
const TypeSettleSweep = "maintenance:settle-sweep"

func (w *Worker) settleSweep(ctx context.Context, _ *asynq.Task) error {
	if w.d.Migration.Runner == nil {
		return nil
	}
	// Each step has a budget of its own, so a backlog of slow settle calls
	// cannot starve the others.
	step := func(d time.Duration, f func(context.Context) (int, error)) (int, error) {
		sctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return f(sctx)
	}
	r, rerr := step(time.Minute, func(c context.Context) (int, error) {
		return w.d.Migration.Runner.RequeueStale(c, StaleImportAfter, 200)
	})
	if r > 0 {
		w.d.Logger.WarnContext(ctx, "imports rescheduled after their tasks went missing or were archived", slog.Int("uploads", r))
	}
	// Transfers whose uploads are all imported but whose completion was never
	// confirmed (the product's data list failed, or listed files we never heard
	// of): check again, and give up (settle FAILED) after a day without progress.
	c, cerr := step(time.Minute, func(c context.Context) (int, error) {
		return w.d.Migration.Runner.ReconcileStale(c, migration.DefaultReconcileAfter, migration.DefaultGiveUpAfter, 100)
	})
	if c > 0 {
		w.d.Logger.InfoContext(ctx, "open transfers reconciled", slog.Int("transfers", c), slog.Bool("ok", cerr == nil))
	}
	n, err := step(90*time.Second, func(c context.Context) (int, error) { return w.d.Migration.Runner.SettlePending(c, 200) })
	if n > 0 {
		w.d.Logger.InfoContext(ctx, "settle sweep", slog.Int("attempted", n), slog.Bool("all_settled", err == nil))
	}
	return errors.Join(rerr, cerr, err)
}

// StaleImportAfter is how long an upload may stay queued (or importing under an
// expired lease) before the sweep schedules it again: longer than a retry's
// backoff (capped at an hour) plus a migration queue backlog, short enough that a
// lost task does not stall a transfer for long.
const StaleImportAfter = 3 * time.Hour

// ImportScheduler enqueues per-upload import tasks for the migration state
// machine (it implements migration.Scheduler).
type ImportScheduler struct{ Enqueuer *Enqueuer }

// ScheduleImport enqueues the import of one upload; scheduling twice is harmless.
func (s ImportScheduler) ScheduleImport(ctx context.Context, ref migration.UploadRef) error {
	_, err := s.Enqueuer.Import(ctx, ImportPayload{ClientKey: ref.ClientKey, TransferID: ref.TransferID, S3Key: ref.S3Key, Label: ref.Label}, ref.Reschedule)
	return err
}
