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

// reconcileCallTimeout bounds one ListData call of ReconcileStale (with the AMP
// client's retries), so that one unresponsive product does not hold the sweep.
const reconcileCallTimeout = 2 * time.Minute

// maxSettleMessage bounds the message sent with a settle status (it is shown to
// the admin running the migration).
const maxSettleMessage = 1000

// lastProgressSQL is when the transfer aliased t last made progress: the latest
// of its listener-triggered (ready_at), its creation, and its uploads' being
// announced (created_at) or imported (imported_at). Neither the transfer's
// updated_at (ReconcileStale bumps it on every examination, and progress reports
// bump it) nor an upload's updated_at (bumped by rescheduling and failed
// attempts) counts: they change when nothing moved. NULLs are ignored.
const lastProgressSQL = `greatest(t.ready_at, t.created_at,
	(SELECT greatest(max(u.created_at), max(u.imported_at)) FROM migration_uploads u WHERE u.transfer_id = t.transfer_id))`

// ReconcileStale settles the transfers that nothing else would: open (ready)
// transfers with no settle status whose final-labelled upload is imported, which
// have no parked, queued or importing upload, and which were not updated for
// olderThan. At most limit of them (default 100), least recently updated first,
// are examined per call. It returns how many were examined; failures are joined
// into err.
//
// Why: such a transfer is waiting for the SUCCESS check (AMP.ListData) alone. When
// that check keeps failing (a product outage of days, or a permanent 401, 403 or
// 400), or keeps listing an s3Key whose app-data-uploaded event never reaches this
// service (its event task was archived), the import task that made the check gives
// up; FailUpload then changes nothing (the upload is imported), SettlePending has
// nothing owed and RequeueStale no upload to schedule, so the transfer would stay
// open, and the customer's migration "in progress", until AMP's 14-day window
// ends.
//
// For each transfer, the completion check is made again, as an import makes it
// (the product's list is fetched with no lock held, and the decision is taken
// again under the transfer's lock):
//
//   - every listed upload is imported: the transfer succeeds and is settled
//     SUCCESS;
//   - the product lists uploads this service never heard of: the list is
//     authoritative and their events may never come, so they are recorded queued
//     (with an empty label, which an app-data-uploaded arriving before their
//     import replaces) and their imports are scheduled through the Scheduler; the
//     import of the last one completes the transfer as usual;
//   - the product answers "already settled" or "expired" (product.ErrTransferSettled,
//     product.ErrTransferExpired): recorded as final, as the settle path does;
//   - otherwise (the list failed, or names uploads that were skipped or failed
//     here) the transfer stays open until it has made no progress for
//     giveUpAfter, and is then failed and settled FAILED through the settle
//     claim, with a message naming the reason: "could not confirm uploaded data:
//     <error>" (secrets removed) or "uploads listed by the product never
//     completed: <s3Keys>".
//
// A transfer's progress is measured from the latest of its listener-triggered,
// and its uploads' being announced or imported (not from updated_at, which this
// sweep itself bumps): uploads recorded from the product's list therefore restart
// the clock. A failed list of a transfer not yet given up is returned as an
// error.
//
// The transfers are claimed in one statement that bumps their updated_at (FOR
// UPDATE SKIP LOCKED), which commits before any call to the product: concurrent
// sweeps never examine the same transfer, and a transfer is examined again only
// once olderThan has passed again. olderThan and giveUpAfter must be positive;
// see DefaultReconcileAfter and DefaultGiveUpAfter.
func (m *Machine) ReconcileStale(ctx context.Context, olderThan, giveUpAfter time.Duration, limit int) (int, error) {
	if olderThan <= 0 || giveUpAfter <= 0 {
		return 0, fmt.Errorf("migration: ReconcileStale: olderThan %v and giveUpAfter %v must be positive", olderThan, giveUpAfter)
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := m.pool.Query(ctx, `
		WITH stale AS (
			SELECT t.transfer_id
			FROM migration_transfers t
			WHERE t.state = 'ready' AND t.settle_status IS NULL AND t.settled_at IS NULL
				AND t.updated_at < now() - $1 * interval '1 millisecond'
				AND EXISTS (SELECT 1 FROM migration_uploads u
					WHERE u.transfer_id = t.transfer_id AND u.state = 'imported' AND u.label = $3)
				AND NOT EXISTS (SELECT 1 FROM migration_uploads u
					WHERE u.transfer_id = t.transfer_id AND u.state IN ('parked', 'queued', 'importing'))
			ORDER BY t.updated_at, t.transfer_id
			LIMIT $2
			FOR UPDATE OF t SKIP LOCKED)
		UPDATE migration_transfers t SET updated_at = now()
		FROM stale s WHERE t.transfer_id = s.transfer_id
		RETURNING t.transfer_id, t.client_key`,
		olderThan.Milliseconds(), limit, m.finalLabel)
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
		if _, err := tx.Exec(ctx, `SELECT 1 FROM migration_transfers WHERE transfer_id = $1 FOR UPDATE`, transferID); err != nil {
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
	rows, err := tx.Query(ctx, `INSERT INTO migration_uploads (transfer_id, s3_key, state)
		SELECT $1, k, 'queued' FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k WHERE k <> '') AS listed
		ORDER BY k
		ON CONFLICT (transfer_id, s3_key) DO NOTHING
		RETURNING s3_key`, transferID, keys)
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
	tag, err := tx.Exec(ctx, `UPDATE migration_transfers t SET state = 'failed', settle_status = 'FAILED',
		settle_message = $2, finished_at = now(), updated_at = now()
		WHERE t.transfer_id = $1 AND t.state IN ('waiting', 'ready') AND t.settled_at IS NULL AND t.settle_status IS NULL
			AND `+lastProgressSQL+` < now() - $3 * interval '1 millisecond'`,
		transferID, truncateText(why, maxSettleMessage), giveUpAfter.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("mark failed: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	return true, skipOpenUploads(ctx, tx, transferID, "transfer failed: no progress")
}

// markExpired records that the product answered the transfer is past AMP's 14-day
// window (product.ErrTransferExpired) before it could be settled: no call about it is
// accepted any more, so an open transfer fails (settle status FAILED, message
// naming the cause) and is recorded settled with connectrelay.SettleExpired and the answer,
// as the settle path records an expired settle call. Its open uploads are skipped
// and this process's imports of it stop. A transfer already closed is left as it
// is. Like markSettledByProduct, it writes under a detached, bounded context.
func (m *Machine) markExpired(ctx context.Context, transferID string, cause error) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	answer := redactSecrets(cause.Error())
	msg := truncateText("could not confirm uploaded data: "+answer, maxSettleMessage)
	var expired bool
	err := pgx.BeginFunc(bctx, m.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(bctx, `UPDATE migration_transfers SET state = 'failed', settle_status = 'FAILED',
			settle_message = $2, settled_at = now(), settle_result = 'expired', settle_error = $3,
			settle_claimed_until = NULL, finished_at = now(), updated_at = now()
			WHERE transfer_id = $1 AND state IN ('waiting', 'ready') AND settled_at IS NULL AND settle_status IS NULL`,
			transferID, msg, answer)
		if err != nil {
			return err
		}
		if expired = tag.RowsAffected() > 0; !expired {
			return nil
		}
		return skipOpenUploads(bctx, tx, transferID, "transfer expired")
	})
	if err != nil {
		return fmt.Errorf("migration: record transfer %s expired: %w", transferID, err)
	}
	if expired {
		m.stopLocal(transferID, "expired")
	}
	return nil
}
