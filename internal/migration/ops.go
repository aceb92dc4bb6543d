package migration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/jackc/pgx/v5"
)

// TransferQuery selects transfers for operators (Reader.List).
type TransferQuery struct {
	// Open keeps only the transfers not settled at the product yet: waiting,
	// ready, or final with the settle call still owed.
	Open bool
	// Limit bounds the list: DefaultListLimit when <= 0, at most MaxListLimit.
	Limit int
}

// List returns the transfers of every tenant selected by q, newest first.
func (r *Reader) List(ctx context.Context, q TransferQuery) ([]connectrelay.Transfer, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultListLimit
	}
	q.Limit = min(q.Limit, MaxListLimit)
	rows, err := r.pool.Query(ctx, `SELECT `+transferColumns+` FROM migration_transfers
		WHERE NOT $1 OR settled_at IS NULL ORDER BY created_at DESC, transfer_id LIMIT $2`, q.Open, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (connectrelay.Transfer, error) { return scanTransfer(r) })
	if err != nil {
		return nil, fmt.Errorf("migration: list transfers: %w", err)
	}
	return ts, nil
}

// TransferByID returns one transfer whatever its tenant, for operators. Errors
// wrap ErrTransferNotFound.
func (r *Reader) TransferByID(ctx context.Context, transferID string) (connectrelay.Transfer, error) {
	t, err := scanTransfer(r.pool.QueryRow(ctx, sqlGetTransferByID, transferID))
	if errors.Is(err, pgx.ErrNoRows) {
		return connectrelay.Transfer{}, fmt.Errorf("migration: transfer %s: %w", transferID, ErrTransferNotFound)
	}
	if err != nil {
		return connectrelay.Transfer{}, fmt.Errorf("migration: load transfer %s: %w", transferID, err)
	}
	return t, nil
}

// ReceivedEvent is one App Migration Platform event as recorded when the worker
// processed it (its body is not included).
type ReceivedEvent struct {
	ID        int64  `json:"id"`
	ClientKey string `json:"clientKey"`
	EventType string `json:"eventType"`
	MessageID string `json:"messageId,omitempty"`
	S3Key     string `json:"s3Key,omitempty"`
	// Known is false for an event type this service does not know.
	Known bool `json:"known"`
	// Outcome is handled, unknown or rejected (the transfer is another tenant's).
	Outcome string `json:"outcome"`
	// Deliveries counts how many times the event reached the worker.
	Deliveries     int       `json:"deliveries"`
	ReceivedAt     time.Time `json:"receivedAt"`
	LastReceivedAt time.Time `json:"lastReceivedAt"`
	HandledAt      time.Time `json:"handledAt,omitzero"`
}

// Events returns the events recorded for a transfer, oldest first, at most
// limit of them (<= 0 means MaxListLimit).
func (r *Reader) Events(ctx context.Context, transferID string, limit int) ([]ReceivedEvent, error) {
	if limit <= 0 || limit > MaxListLimit {
		limit = MaxListLimit
	}
	rows, err := r.pool.Query(ctx, `SELECT id, client_key, event_type, message_id, s3_key, known, outcome, deliveries,
		received_at, last_received_at, handled_at
		FROM migration_events WHERE transfer_id = $1 ORDER BY received_at, id LIMIT $2`, transferID, limit)
	if err != nil {
		return nil, fmt.Errorf("migration: events of %s: %w", transferID, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ReceivedEvent, error) {
		var e ReceivedEvent
		var handled *time.Time
		err := row.Scan(&e.ID, &e.ClientKey, &e.EventType, &e.MessageID, &e.S3Key, &e.Known, &e.Outcome, &e.Deliveries,
			&e.ReceivedAt, &e.LastReceivedAt, &handled)
		e.HandledAt = deref(handled)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("migration: events of %s: %w", transferID, err)
	}
	return evs, nil
}
