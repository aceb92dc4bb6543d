package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of ReconcileStale's arguments, as the worker's periodic sweep passes
// them.
const (
	// DefaultReconcileAfter is how long an open transfer whose uploads are all
	// imported may go unchanged before ReconcileStale checks its completion again:
	// long enough for the import task's own retries of that check to have had
	// their chance, short enough that a customer does not wait long for SUCCESS.
	DefaultReconcileAfter = 30 * time.Minute
	// DefaultGiveUpAfter is how long such a transfer may go without progress
	// before ReconcileStale settles it FAILED: long enough to ride out a product
	// outage, far shorter than AMP's 14-day window.
	DefaultGiveUpAfter = 24 * time.Hour
)

// DefaultEventRetention is how long migration_events keeps an event after its
// last delivery before the settle sweep deletes it: well past AMP's 14-day
// transfer window, so every event of a transfer is there while it can change.
const DefaultEventRetention = 30 * 24 * time.Hour

// PruneEvents deletes at most limit (default 5000) events of migration_events
// not received for olderThan, and returns how many. olderThan must be positive.
func (m *Machine) PruneEvents(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("migration: PruneEvents: olderThan %v must be positive", olderThan)
	}
	if limit <= 0 {
		limit = 5000
	}
	tag, err := m.pool.Exec(ctx, sqlPruneEvents, olderThan.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("migration: prune events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// reconcileCallTimeout bounds one ListData call of ReconcileStale (with the AMP
// client's retries), so that one unresponsive product does not hold the sweep.
const reconcileCallTimeout = 2 * time.Minute

// maxSettleMessage bounds the message sent with a settle status (it is shown to
// the admin running the migration).
const maxSettleMessage = 1000

// ReconcileStale checks again the completion of the ready transfers nothing else
// would finish: no settle status, final-labelled upload imported, no upload still
// to import, and not updated for olderThan. At most limit of them (default 100),
// least recently updated first, are claimed in one statement (so concurrent
// sweeps never examine the same transfer) and examined; it returns how many,
// with their failures joined into err.
//
// For each, the product's list of the transfer's data is fetched with no lock
// held, and the decision is taken again under the transfer's lock: every listed
// upload imported makes the transfer succeed (SUCCESS owed); listed uploads this
// service never heard of are recorded queued, without a label, and scheduled;
// the product's "settled" and "expired" answers are recorded as final;
// otherwise (the list failed, or names uploads skipped or failed here) the
// transfer fails once it made no progress for giveUpAfter, with a settle message
// naming the reason. A failed list of a transfer not yet given up is returned as
// an error. olderThan and giveUpAfter must be positive; see
// DefaultReconcileAfter and DefaultGiveUpAfter.
func (m *Machine) ReconcileStale(ctx context.Context, olderThan, giveUpAfter time.Duration, limit int) (int, error) {
	if olderThan <= 0 || giveUpAfter <= 0 {
		return 0, fmt.Errorf("migration: ReconcileStale: olderThan %v and giveUpAfter %v must be positive", olderThan, giveUpAfter)
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := m.pool.Query(ctx, sqlClaimUnconfirmed, olderThan.Milliseconds(), limit, m.finalLabel)
	if err != nil {
		return 0, fmt.Errorf("migration: find transfers to reconcile: %w", err)
	}
	type candidate struct{ transferID, clientKey string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
		var c candidate
		return c, r.Scan(&c.transferID, &c.clientKey)
	})
	if err != nil {
		return 0, fmt.Errorf("migration: find transfers to reconcile: %w", err)
	}
	var (
		n    int
		errs []error
	)
	for _, c := range found {
		if err := ctx.Err(); err != nil {
			// The rest were claimed: they are examined after olderThan.
			errs = append(errs, err)
			break
		}
		n++
		if err := m.reconcile(ctx, c.clientKey, c.transferID, giveUpAfter); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// reconcileOutcome is what reconcile's transaction decided.
type reconcileOutcome struct {
	stuck     bool // the transfer was still waiting for the SUCCESS check alone
	succeeded bool
	failed    bool
	reason    string      // why it failed, or would fail once giveUpAfter passes
	schedule  []UploadRef // listed uploads recorded now
	missing   []string
	nMissing  int
}

// reconcile makes the completion check of one claimed transfer again; see
// ReconcileStale.
func (m *Machine) reconcile(ctx context.Context, clientKey, transferID string, giveUpAfter time.Duration) error {
	log := m.log.With(slog.String("client_key", clientKey), slog.String("transfer_id", transferID))

	callCtx, cancel := context.WithTimeout(ctx, reconcileCallTimeout)
	uploads, lerr := m.amp.ListData(callCtx, clientKey, transferID)
	keys := s3Keys(uploads)
	cancel()
	if final, err := m.listAnsweredFinal(ctx, log, transferID, lerr); final {
		if err != nil {
			return fmt.Errorf("migration: reconcile transfer %s: %w", transferID, err)
		}
		return nil
	}

	var out reconcileOutcome
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		out = reconcileOutcome{}
		if _, err := tx.Exec(ctx, sqlLockTransferRow, transferID); err != nil {
			return fmt.Errorf("lock transfer: %w", err)
		}
		// Decided again under the lock: an event, an import or another sweep may
		// have changed the transfer while the product was asked.
		if _, done, err := m.allKnownImported(ctx, tx, transferID); err != nil || !done {
			return err
		}
		out.stuck = true
		if lerr != nil {
			out.reason = "could not confirm uploaded data: " + redactSecrets(lerr.Error())
		} else {
			var err error
			out.missing, out.nMissing, err = notImported(ctx, tx, transferID, keys)
			if err != nil {
				return err
			}
			if out.nMissing == 0 {
				out.succeeded = true
				return markSucceeded(ctx, tx, transferID)
			}
			if out.schedule, err = recordListed(ctx, tx, clientKey, transferID, keys); err != nil || len(out.schedule) > 0 {
				return err
			}
			// Every upload listed and not imported is known here, and skipped
			// or failed: nothing will import it.
			out.reason = "uploads listed by the product never completed: " + strings.Join(out.missing, ", ")
			if out.nMissing > len(out.missing) {
				out.reason += fmt.Sprintf(" (truncated: %d in all)", out.nMissing)
			}
		}
		var err error
		out.failed, err = failIfNoProgress(ctx, tx, transferID, giveUpAfter, out.reason)
		return err
	})
	if err != nil {
		return fmt.Errorf("migration: reconcile transfer %s: %w", transferID, err)
	}

	var errs []error
	switch {
	case !out.stuck:
		log.InfoContext(ctx, "transfer changed while it was reconciled; left to its events and imports")
		return m.settle(ctx, transferID)
	case out.succeeded:
		log.InfoContext(ctx, "transfer succeeded after its completion was checked again", slog.Int("listed_uploads", len(keys)))
	case len(out.schedule) > 0:
		log.WarnContext(ctx, "the product lists uploads whose events never arrived; recorded and scheduled",
			slog.Int("recorded", len(out.schedule)), slog.Any("s3_keys", out.missing))
		for _, ref := range out.schedule {
			if err := m.sched.ScheduleImport(ctx, ref); err != nil {
				// Queued: RequeueStale schedules it later.
				errs = append(errs, fmt.Errorf("migration: reconcile transfer %s: schedule import of %s: %w",
					transferID, ref.S3Key, err))
			}
		}
		return errors.Join(errs...)
	case out.failed:
		log.WarnContext(ctx, "transfer made no progress; failed", slog.Duration("give_up_after", giveUpAfter),
			slog.String("reason", out.reason))
		m.stopLocal(transferID, "no progress")
	case lerr != nil:
		log.WarnContext(ctx, "could not list the product's uploads to complete the transfer; it stays open",
			slog.Any("error", lerr))
		return fmt.Errorf("migration: reconcile transfer %s: list the product's uploads: %w", transferID, lerr)
	default:
		log.WarnContext(ctx, "the product lists uploads that were not imported here; the transfer stays open",
			slog.Int("not_imported", out.nMissing), slog.Any("s3_keys", out.missing))
		return nil
	}
	return m.settle(ctx, transferID)
}

// recordListed records the uploads in keys (the product's list) that this service
// never heard of as queued, with an empty label, and returns them to schedule.
func recordListed(ctx context.Context, tx pgx.Tx, clientKey, transferID string, keys []string) ([]UploadRef, error) {
	rows, err := tx.Query(ctx, sqlRecordListed, transferID, keys)
	if err != nil {
		return nil, fmt.Errorf("record listed uploads: %w", err)
	}
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UploadRef, error) {
		ref := UploadRef{ClientKey: clientKey, TransferID: transferID}
		return ref, r.Scan(&ref.S3Key)
	})
	if err != nil {
		return nil, fmt.Errorf("record listed uploads: %w", err)
	}
	return refs, nil
}

// failIfNoProgress fails the locked, open transfer, settle status FAILED with
// message why, if it made no progress (lastProgressSQL) for giveUpAfter. It
// reports whether it did.
func failIfNoProgress(ctx context.Context, tx pgx.Tx, transferID string, giveUpAfter time.Duration, why string) (bool, error) {
	tag, err := tx.Exec(ctx, sqlFailIfNoProgress, transferID, truncateText(why, maxSettleMessage), giveUpAfter.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("mark failed: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, skipOpenUploads(ctx, tx, transferID, "transfer failed: no progress")
}

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
