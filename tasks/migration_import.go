package tasks

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// ImportTimeout bounds one import attempt. asynq's default (30 min) would cancel
// a multi-gigabyte download mid-stream on every attempt; a stalled download is
// caught much sooner by the download's stall watchdog.
const ImportTimeout = 12 * time.Hour

var _ migration.Scheduler = (*Enqueuer)(nil)

// ScheduleImport enqueues the import of one upload; it implements
// migration.Scheduler. The TaskID is the (transfer, s3Key) pair, so scheduling
// an upload twice is harmless; ref.Reschedule, when not zero, is added to it:
// an upload whose task was archived or lost is scheduled again under a new ID,
// since the old one stays taken for the retention window.
func (e *Enqueuer) ScheduleImport(ctx context.Context, ref migration.UploadRef) error {
	_, err := e.enqueueImport(ctx, ref)
	return err
}

// enqueueImport is ScheduleImport, reporting whether the task already existed.
func (e *Enqueuer) enqueueImport(ctx context.Context, ref migration.UploadRef) (duplicate bool, err error) {
	t, err := newTask(TypeMigrationImport, ref)
	if err != nil {
		return false, err
	}
	id := "import:" + ref.TransferID + ":" + ref.S3Key
	if ref.Reschedule != 0 {
		id += ":r" + strconv.Itoa(ref.Reschedule)
	}
	return e.enqueue(ctx, t, asynq.Queue(QueueMigration), asynq.TaskID(id),
		asynq.Retention(MigrationRetention), asynq.MaxRetry(MaxRetry), asynq.Timeout(ImportTimeout))
}

// migrationImport imports one upload. When the task will not run again (a
// permanent error, or its last attempt failed) the upload is failed, and with it
// the transfer, rather than left queued until the 14-day window ends.
func (h *Handlers) migrationImport(ctx context.Context, t *asynq.Task) error {
	ref, err := decode(t, func(r *migration.UploadRef) bool {
		return r.ClientKey != "" && r.TransferID != "" && r.S3Key != ""
	})
	if err != nil {
		return err
	}
	if h.d.Migration == nil {
		return notConfigured(t)
	}
	err = h.d.Migration.Import(ctx, ref)
	if errors.Is(err, migration.ErrImportInProgress) {
		// Another worker holds the upload's lease; look again after it would
		// have expired, without counting a failure.
		return &RetryLater{After: 30 * time.Second, Err: err}
	}
	if err == nil {
		return nil
	}
	err = permanent(err)
	if errors.Is(ctx.Err(), context.Canceled) {
		// The worker is shutting down: asynq has put the task back in its
		// queue, so this was not the last attempt whatever the retry count.
		return err
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if ferr := h.d.Migration.FailUpload(fctx, ref, err); ferr != nil {
			h.d.Logger.ErrorContext(ctx, "could not mark the upload failed", slog.String("transfer_id", ref.TransferID),
				slog.String("s3_key", ref.S3Key), slog.String("error", ferr.Error()))
			// The upload stays queued; the settle sweep (RequeueStale) schedules
			// it again later.
			return permanent(ferr)
		}
	}
	return err
}
