package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"
)

// MessageAcknowledger is implemented by an AMP whose platform settles
// transfers itself and wants each event message given a status: Forge's
// (product.ForgeAMP, and Router for Forge installations). The machine calls
// it with no lock or transaction open, for messages of one transfer and one
// status (product.MessageSuccess or product.MessageFailed). An error wrapping
// product.ErrTransferSettled means the transfer is settled: final.
type MessageAcknowledger interface {
	AcknowledgeMessages(ctx context.Context, clientKey, transferID, status string, messageIDs []string) error
}

// ErrNoAcknowledger is returned when a transfer owes Forge message statuses
// and the machine's AMP is not a MessageAcknowledger (a worker built without
// Forge support).
var ErrNoAcknowledger = errors.New("migration: the AMP cannot acknowledge Forge messages")

// Bounds of the acknowledgement calls. As for settle calls, a call ends well
// within its claim, so two calls for one message are never in flight at once;
// a worker that dies mid-call leaves its claim to expire, and the next event,
// import or settle sweep makes the call again.
const (
	ackClaimTTL    = 2 * time.Minute
	ackCallTimeout = ackClaimTTL - 30*time.Second
	ackBatch       = 500
)

// ForgeMessage is one Forge message of a transfer that owes the platform a
// status, and what was sent for it.
type ForgeMessage struct {
	MessageID string `json:"messageId"`
	// Kind is the machine's type of the event that brought it.
	Kind  EventType `json:"kind"`
	S3Key string    `json:"s3Key,omitempty"`
	// Status is the status the platform accepted (or answered settled to);
	// "" while none was.
	Status string `json:"status,omitempty"`
	// Result is connectrelay.SettleReported or SettleAlreadySettled once sent.
	Result    string    `json:"result,omitempty"`
	AckedAt   time.Time `json:"ackedAt,omitzero"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"lastError,omitempty"`
}

// ForgeMessages returns the Forge messages of a transfer in the order they
// were recorded; none for a Connect transfer.
func (r *Reader) ForgeMessages(ctx context.Context, transferID string) ([]ForgeMessage, error) {
	rows, err := r.pool.Query(ctx, sqlForgeMessages, transferID)
	if err != nil {
		return nil, fmt.Errorf("migration: Forge messages of transfer %s: %w", transferID, err)
	}
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ForgeMessage, error) {
		var (
			fm      ForgeMessage
			ackedAt *time.Time
		)
		err := row.Scan(&fm.MessageID, &fm.Kind, &fm.S3Key, &fm.Status, &fm.Result, &ackedAt, &fm.Attempts, &fm.LastError)
		fm.AckedAt = deref(ackedAt)
		return fm, err
	})
	if err != nil {
		return nil, fmt.Errorf("migration: Forge messages of transfer %s: %w", transferID, err)
	}
	return msgs, nil
}

// recordForgeMessage records, in the event's transaction, the message of a
// Forge event that owes the platform a status: triggered:listener and
// uploaded:app_data with a messageId.
func recordForgeMessage(p *pipeTx, ev Event) {
	if ev.ForgeType == "" || ev.MessageID == "" ||
		(ev.Type != EventListenerTriggered && ev.Type != EventAppDataUploaded) {
		return
	}
	s3Key := ""
	if ev.Type == EventAppDataUploaded {
		s3Key = ev.S3Key
	}
	p.exec("record Forge message", sqlRecordForgeMessage, ev.TransferID, ev.MessageID, string(ev.Type), s3Key)
}

// acknowledge sends the statuses the transfer's Forge messages owe and that
// are known: SUCCESS for a handled triggered:listener and an imported upload,
// FAILED for an upload skipped or failed, or left behind by a transfer that
// closed without it. Each message is claimed before its call, so racing
// workers send each status once. A 409 (the platform settled the transfer) is
// recorded as final and closes the transfer here, as a settled answer does.
// It does nothing (one statement) for a transfer without Forge messages.
func (m *Machine) acknowledge(ctx context.Context, transferID string) error {
	var errs []error
	for {
		n, err := m.acknowledgeBatch(ctx, transferID)
		if err != nil {
			errs = append(errs, err)
		}
		if n < ackBatch || err != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// acknowledgeBatch claims and sends at most ackBatch statuses; it reports how
// many it claimed.
func (m *Machine) acknowledgeBatch(ctx context.Context, transferID string) (int, error) {
	rows, err := m.pool.Query(ctx, sqlClaimForgeAcks, transferID, ackClaimTTL.Milliseconds(), ackBatch)
	if err != nil {
		return 0, fmt.Errorf("migration: acknowledge messages of transfer %s: claim: %w", transferID, err)
	}
	var (
		clientKey string
		byStatus  = map[string][]string{}
		n         int
	)
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&clientKey, &id, &status); err != nil {
			rows.Close()
			return 0, fmt.Errorf("migration: acknowledge messages of transfer %s: claim: %w", transferID, err)
		}
		byStatus[status] = append(byStatus[status], id)
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("migration: acknowledge messages of transfer %s: claim: %w", transferID, err)
	}
	if n == 0 {
		return 0, nil
	}
	log := m.log.With(slog.String("client_key", clientKey), slog.String("transfer_id", transferID))
	acker, ok := m.amp.(MessageAcknowledger)
	// Recorded even when the caller is going away, as settle results are.
	bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer bcancel()
	var (
		errs    []error
		settled bool
	)
	for _, status := range []string{product.MessageSuccess, product.MessageFailed} {
		ids := byStatus[status]
		if len(ids) == 0 {
			continue
		}
		var cerr error
		if !ok {
			cerr = ErrNoAcknowledger
		} else {
			callCtx, cancel := context.WithTimeout(ctx, ackCallTimeout)
			cerr = acker.AcknowledgeMessages(callCtx, clientKey, transferID, status, ids)
			cancel()
		}
		result := connectrelay.SettleReported
		switch {
		case cerr == nil:
		case errors.Is(cerr, product.ErrTransferSettled):
			result, settled = connectrelay.SettleAlreadySettled, true
		default:
			log.WarnContext(ctx, "Forge message status call failed", slog.String("status", status),
				slog.Int("messages", len(ids)), slog.Any("error", cerr))
			if _, err := m.pool.Exec(bctx, sqlReleaseForgeAcks, transferID, ids, redactSecrets(cerr.Error())); err != nil {
				cerr = errors.Join(cerr, fmt.Errorf("record the failure: %w", err))
			}
			errs = append(errs, fmt.Errorf("migration: acknowledge %d messages of transfer %s %s: %w", len(ids), transferID, status, cerr))
			continue
		}
		if _, err := m.pool.Exec(bctx, sqlMarkForgeAcked, transferID, ids, status, result); err != nil {
			// The claim expires and the status is sent again: harmless.
			errs = append(errs, fmt.Errorf("migration: acknowledge messages of transfer %s: record %s: %w", transferID, result, err))
			continue
		}
		log.InfoContext(ctx, "Forge messages acknowledged", slog.String("status", status),
			slog.Int("messages", len(ids)), slog.String("result", result))
	}
	if settled {
		log.InfoContext(ctx, "the platform says the transfer is settled")
		if err := m.markSettledByProduct(ctx, transferID); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// AcknowledgePending sends the Forge message statuses still owed (their call
// failed and every task that could have retried it is used up, or the worker
// making it died), for at most limit transfers, oldest message first. It
// reports how many transfers were attempted; failures are recorded on each
// message and joined into err. SettlePending runs it, so the settle sweep
// keeps Forge transfers inside the platform's 15-minute window.
func (m *Machine) AcknowledgePending(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	n, err := m.eachListed(ctx, "list transfers owing Forge message statuses", sqlListForgeAckOwed, limit, m.acknowledge)
	return max(n, 0), err
}
