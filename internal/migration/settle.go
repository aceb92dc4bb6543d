package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/product"
)

// settleClaimTTL is how long a settle claim keeps other workers from making the
// same settle call. settleCallTimeout bounds the call itself (with the AMP
// client's retries) well within the claim, so that a claim never expires while its
// call is still running: two settle calls for one transfer are never in flight at
// once. A worker that dies mid-call leaves its claim to expire; SettlePending then
// makes the call again.
const (
	settleClaimTTL    = 3 * time.Minute
	settleCallTimeout = settleClaimTTL - 30*time.Second
)

// settle makes the settle call the transfer owes, if any. The product's "already
// settled" and "expired" answers are final and recorded as such. Any other failure
// is recorded on the transfer and returned, so that the task is retried; every
// later event or import of the transfer tries again too, and so does
// SettlePending.
//
// No lock or transaction is held during the call: it is an HTTP call that may be
// retried for minutes, and the AMP implementation itself needs database
// connections (the tenant's URL and secret). Instead one short statement claims
// the call (settle_claimed_until) and commits; the call is made; a second short
// statement records the result and clears the claim. Workers racing to settle one
// transfer (an import completing it while a duplicate event arrives) therefore make
// one call between them: the others find it claimed, or settled, and return nil.
//
// A Forge transfer's owed message statuses are sent first (acknowledge): the
// platform settles a Forge transfer itself once every message has one, and
// the settle call is then only a line of its progress log.
func (m *Machine) settle(ctx context.Context, transferID string) error {
	return errors.Join(m.acknowledge(ctx, transferID), m.settleCall(ctx, transferID))
}

// settleCall makes the settle call itself (see settle).
func (m *Machine) settleCall(ctx context.Context, transferID string) error {
	var (
		clientKey, status string
		percent           int
		message           *string
		claim             time.Time
	)
	err := m.pool.QueryRow(ctx, sqlClaimSettle, transferID, settleClaimTTL.Milliseconds()).
		Scan(&clientKey, &status, &percent, &message, &claim)
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing owed (open, or settled), or another worker is making the call.
		return nil
	}
	if err != nil {
		return fmt.Errorf("migration: settle transfer %s: claim the settle call: %w", transferID, err)
	}
	p := settleProgress(status, percent, message)
	log := m.log.With(slog.String("client_key", clientKey), slog.String("transfer_id", transferID),
		slog.String("status", p.Status))

	callCtx, cancel := context.WithTimeout(ctx, settleCallTimeout)
	rerr := m.amp.ReportProgress(callCtx, clientKey, transferID, p)
	cancel()

	// Recorded even when the caller is going away: a result the product gave
	// must not be lost, and a failed call must give its claim back at once.
	bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer bcancel()
	var (
		result  = connectrelay.SettleReported
		errText *string
	)
	switch {
	case rerr == nil:
	case errors.Is(rerr, product.ErrTransferSettled):
		result = connectrelay.SettleAlreadySettled
	case errors.Is(rerr, product.ErrTransferExpired):
		result = connectrelay.SettleExpired
		e := redactSecrets(rerr.Error())
		errText = &e
	default:
		log.WarnContext(ctx, "settle call failed", slog.Any("error", rerr))
		if _, err := m.pool.Exec(bctx, sqlReleaseSettle, transferID, redactSecrets(rerr.Error()), claim); err != nil {
			rerr = errors.Join(rerr, fmt.Errorf("record the failure: %w", err))
		}
		return fmt.Errorf("migration: settle transfer %s %s: %w", transferID, status, rerr)
	}
	if err := pgx.BeginFunc(bctx, m.pool, func(tx pgx.Tx) error {
		return markSettled(bctx, tx, sqlMarkSettled, transferID, result, errText)
	}); err != nil {
		// The claim expires and the call is made again; the product then answers
		// "already settled", which is recorded.
		return fmt.Errorf("migration: settle transfer %s %s: record %s: %w", transferID, status, result, err)
	}
	if result == connectrelay.SettleExpired {
		log.WarnContext(ctx, "transfer expired before it could be settled; recorded as final", slog.Any("error", rerr))
		return nil
	}
	log.InfoContext(ctx, "transfer settled", slog.String("result", result))
	return nil
}

// settleProgress is the settle call's body for the status the transfer settles
// with; message, when recorded, replaces the status's default message.
func settleProgress(status string, lastPercent int, message *string) product.Progress {
	p := product.Progress{Status: status, Percent: lastPercent}
	switch status {
	case product.StatusSuccess:
		p.Percent, p.Message = 100, "all uploaded data imported"
	case product.StatusIncomplete:
		p.Message = "transfer cancelled on request"
	case product.StatusFailed:
		p.Message = "server-side migration listener errored"
	}
	if message != nil && *message != "" {
		p.Message = *message
	}
	return p
}

// markSettledByProduct records that the product said the transfer is settled when
// we did not settle it (an IN_PROGRESS, data or list call answered 403): final, so
// open uploads are skipped and this process's imports stop. The record is written
// under a context detached from ctx (bounded by bookkeepingTimeout), like the other
// writes that follow a call's outcome: a worker shutting down still records it.
func (m *Machine) markSettledByProduct(ctx context.Context, transferID string) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	err := pgx.BeginFunc(bctx, m.pool, func(tx pgx.Tx) error {
		if err := markSettled(bctx, tx, sqlMarkSettledByProduct, transferID); err != nil {
			return err
		}
		return skipOpenUploads(bctx, tx, transferID, "transfer settled")
	})
	if err != nil {
		return fmt.Errorf("migration: record transfer %s settled by the product: %w", transferID, err)
	}
	m.stopLocal(transferID, "settled by the product")
	return nil
}

// SettlePending makes the settle calls still owed (the transfer reached a final
// state but the product did not accept the settle call, and every task that could
// have retried it is used up, or the worker making it died), at most limit of them,
// oldest first. It reports how
// many were attempted; failures are recorded on each transfer and joined into err.
// The worker runs it periodically so a transfer is never left open at the product
// because of a transient outage. It then sends the Forge message statuses still
// owed (AcknowledgePending, limit transfers more), and counts those transfers
// too.
func (m *Machine) SettlePending(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	// A transfer whose settle call another worker has claimed is left to it; a
	// claim whose worker died expires (settleClaimTTL) and is taken here.
	ids, err := m.eachListed(ctx, "list transfers owed a settle call", sqlListSettleOwed, limit, m.settle)
	if ids < 0 {
		return 0, err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	// Forge message statuses still owed, of transfers that may owe no settle
	// call yet.
	n, err := m.AcknowledgePending(ctx, limit)
	if err != nil {
		errs = append(errs, err)
	}
	return ids + n, errors.Join(errs...)
}

// eachListed runs do for each transfer id the query sql (with limit as $1)
// lists, in order, while ctx lasts. It returns how many ids were listed (-1
// when the list itself failed, what naming it in the error) and the failures
// of do, joined.
func (m *Machine) eachListed(ctx context.Context, what, sql string, limit int,
	do func(ctx context.Context, transferID string) error) (int, error) {
	rows, err := m.pool.Query(ctx, sql, limit)
	if err != nil {
		return -1, fmt.Errorf("migration: %s: %w", what, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return -1, fmt.Errorf("migration: %s: %w", what, err)
	}
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := do(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return len(ids), errors.Join(errs...)
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
		var clientKey string
		err := tx.QueryRow(bctx, sqlMarkExpired, transferID, msg, answer).Scan(&clientKey)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		expired = true
		if err := outbox.Append(bctx, tx, clientKey, connectrelay.EventTransferSettled, transferID, outbox.Data{}); err != nil {
			return err
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

// listAnsweredFinal records the product's final answers to a list of the
// transfer's data: "already settled" (product.ErrTransferSettled) is recorded as settled by
// the product, "expired" (product.ErrTransferExpired) as an expired FAILED transfer (see
// markExpired). It reports whether err was such an answer, and the error of
// recording it.
func (m *Machine) listAnsweredFinal(ctx context.Context, log *slog.Logger, transferID string, err error) (bool, error) {
	switch {
	case errors.Is(err, product.ErrTransferSettled):
		log.InfoContext(ctx, "product says the transfer is settled")
		return true, m.markSettledByProduct(ctx, transferID)
	case errors.Is(err, product.ErrTransferExpired):
		log.WarnContext(ctx, "product says the transfer expired before its data could be confirmed; recorded as final",
			slog.Any("error", err))
		return true, m.markExpired(ctx, transferID, err)
	}
	return false, nil
}

// markSettled runs one of the statements that record a transfer settled (they
// return its tenant, and nothing when it was settled already) and appends the
// settled event when it did.
func markSettled(ctx context.Context, tx pgx.Tx, stmt, transferID string, args ...any) error {
	var clientKey string
	err := tx.QueryRow(ctx, stmt, append([]any{transferID}, args...)...).Scan(&clientKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return outbox.Append(ctx, tx, clientKey, connectrelay.EventTransferSettled, transferID, outbox.Data{})
}
