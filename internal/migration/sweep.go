package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequeueStale schedules again, through the Scheduler, the imports that nothing is
// going to run: uploads of open transfers that are queued, or importing under an
// expired lease (their worker died), and were not updated for olderThan. An import
// task can be lost (the queue's data was lost, or the task was archived without
// the task layer calling FailUpload), and the events that schedule an upload are
// not re-sent once acknowledged, so without this sweep such an upload would stay
// queued, and its transfer open, until AMP's 14-day window ends.
//
// Each upload is scheduled with UploadRef.Reschedule set to a new non-zero value
// (how many times this sweep has scheduled it), so that the task layer enqueues a
// new task rather than finding the lost one's ID taken. Its updated_at is bumped
// in the same statement, so it is not scheduled again before olderThan has passed
// again, and concurrent sweeps never pick the same upload. An upload whose
// scheduling fails waits for the next sweep after olderThan.
//
// olderThan must be positive and should exceed how long a healthy queue may take
// to start a scheduled import; duplicates are harmless anyway (Import is
// idempotent). At most limit uploads (default 100), least recently updated first,
// are scheduled per call. It returns how many were scheduled; scheduling failures
// are joined into err.
func (m *Machine) RequeueStale(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("migration: RequeueStale: olderThan %v is not positive", olderThan)
	}
	if limit <= 0 {
		limit = 100
	}
	// SKIP LOCKED: an upload being claimed, imported or skipped right now is not
	// stale, and the sweep never waits on (or deadlocks with) a transaction.
	rows, err := m.pool.Query(ctx, sqlClaimStaleUploads, olderThan.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("migration: find stale uploads: %w", err)
	}
	type stale struct {
		ref   UploadRef
		state UploadState
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stale, error) {
		var s stale
		return s, r.Scan(&s.ref.ClientKey, &s.ref.TransferID, &s.ref.S3Key, &s.ref.Label, &s.ref.Reschedule, &s.state)
	})
	if err != nil {
		return 0, fmt.Errorf("migration: find stale uploads: %w", err)
	}
	var (
		n    int
		errs []error
	)
	for _, s := range found {
		log := m.log.With(slog.String("client_key", s.ref.ClientKey), slog.String("transfer_id", s.ref.TransferID),
			slog.String("s3_key", s.ref.S3Key), slog.String("upload_state", string(s.state)),
			slog.Int("reschedule", s.ref.Reschedule))
		if err := m.sched.ScheduleImport(ctx, s.ref); err != nil {
			log.WarnContext(ctx, "could not schedule a stale upload again", slog.Any("error", err))
			errs = append(errs, fmt.Errorf("migration: schedule stale upload %s (transfer %s) again: %w",
				s.ref.S3Key, s.ref.TransferID, err))
			continue
		}
		log.WarnContext(ctx, "stale upload scheduled again")
		n++
	}
	return n, errors.Join(errs...)
}
