// Package outbox is the event feed: every change reported to the vendor (tenant
// and transfer changes, to the LifecycleListener and MigrationListener hooks,
// which the bundled forwarding implements) is appended here in the same
// transaction as the change itself, then dispatched to a delivery task.
//
// The pattern is a transactional outbox. Writing the event with the change
// means a change is never made without its event, and an event never reports a
// change that was rolled back. The Dispatcher of each worker claims undispatched
// rows (FOR UPDATE SKIP LOCKED, so workers share the work), enqueues one task per
// row with the row's id as TaskID (enqueuing twice is harmless) and marks the
// rows dispatched in the same transaction; a row whose enqueue failed stays
// undispatched and is claimed again. Delivery is therefore at least once, with
// the row's id as the event's stable identity.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay"
)

// ErrNotFound is returned by Get for an id no event has (or had: dispatched
// events are pruned after a while).
var ErrNotFound = errors.New("event not found")

// Event is one appended event.
type Event struct {
	ID         int64
	ClientKey  string
	Type       connectrelay.EventType
	TransferID string
	// Data holds the event's own fields (changes, linked clientKeys, a raw
	// platform event), never a secret.
	Data      Data
	CreatedAt time.Time
}

// Data are the fields an event carries beyond its tenant and transfer.
type Data struct {
	Changes          []string        `json:"changes,omitempty"`
	LinkedClientKeys []string        `json:"linkedClientKeys,omitempty"`
	Raw              json.RawMessage `json:"raw,omitempty"`
}

// Append writes an event of clientKey in tx, the transaction of the change it
// reports. transferID is "" for tenant events.
func Append(ctx context.Context, tx pgx.Tx, clientKey string, typ connectrelay.EventType, transferID string, data Data) error {
	b, err := encode(typ, data)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sqlAppend, clientKey, string(typ), transferID, b); err != nil {
		return fmt.Errorf("append %s event: %w", typ, err)
	}
	return nil
}

// Queue is Append for a transaction sent as pipelined batches: it queues the
// insert on batch, which the caller sends inside its transaction. The error is
// an encoding failure; the insert's own error comes from the batch, wrapped as
// Append wraps it.
func Queue(batch *pgx.Batch, clientKey string, typ connectrelay.EventType, transferID string, data Data) error {
	b, err := encode(typ, data)
	if err != nil {
		return err
	}
	batch.Queue(sqlAppend, clientKey, string(typ), transferID, b).Fn = func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("append %s event: %w", typ, err)
		}
		return nil
	}
	return nil
}

func encode(typ connectrelay.EventType, data Data) (string, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("encode %s event: %w", typ, err)
	}
	return string(b), nil
}

const (
	// sqlAppend appends an event. $1 client key, $2 type, $3 transfer id, $4 data.
	sqlAppend = `INSERT INTO event_outbox (client_key, type, transfer_id, data) VALUES ($1, $2, $3, $4::jsonb)`
	// sqlGet reads one event. $1 id.
	sqlGet = `SELECT id, client_key, type, transfer_id, data, created_at FROM event_outbox WHERE id = $1`
	// sqlClaim locks up to $1 undispatched events, oldest first, skipping those
	// another dispatcher holds.
	sqlClaim = `SELECT id FROM event_outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`
	// sqlMarkDispatched marks events $1 (an id array) dispatched.
	sqlMarkDispatched = `UPDATE event_outbox SET dispatched_at = now() WHERE id = ANY($1)`
	// sqlPrune deletes events dispatched more than $1 milliseconds ago, at most
	// $2 of them.
	sqlPrune = `DELETE FROM event_outbox WHERE id IN (SELECT id FROM event_outbox
		WHERE dispatched_at < now() - $1 * interval '1 millisecond' ORDER BY id LIMIT $2)`
)

// Store reads and dispatches the feed.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store over pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Get returns the event id. Errors wrap ErrNotFound.
func (s *Store) Get(ctx context.Context, id int64) (Event, error) {
	var (
		ev   Event
		typ  string
		data []byte
	)
	err := s.pool.QueryRow(ctx, sqlGet, id).Scan(&ev.ID, &ev.ClientKey, &typ, &ev.TransferID, &data, &ev.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, fmt.Errorf("event %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("event %d: %w", id, err)
	}
	ev.Type = connectrelay.EventType(typ)
	if err := json.Unmarshal(data, &ev.Data); err != nil {
		return Event{}, fmt.Errorf("event %d: decode data: %w", id, err)
	}
	return ev, nil
}

// Dispatch hands up to limit undispatched events, oldest first, to enqueue and
// marks those it enqueued dispatched, in one transaction. It returns how many it
// dispatched. An event whose enqueue failed stays undispatched for the next call.
func (s *Store) Dispatch(ctx context.Context, limit int, enqueue func(ctx context.Context, id int64) error) (int, error) {
	var done []int64
	var errs []error
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		done, errs = nil, nil
		rows, err := tx.Query(ctx, sqlClaim, limit)
		if err != nil {
			return fmt.Errorf("claim events: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("claim events: %w", err)
		}
		for _, id := range ids {
			if err := enqueue(ctx, id); err != nil {
				errs = append(errs, err)
				continue
			}
			done = append(done, id)
		}
		if len(done) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, sqlMarkDispatched, done); err != nil {
			return fmt.Errorf("mark events dispatched: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(done), errors.Join(errs...)
}

// Prune deletes at most limit events dispatched longer than olderThan ago, and
// reports how many.
func (s *Store) Prune(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, sqlPrune, olderThan.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Dispatcher runs Dispatch in a loop: every Interval, and at once again while
// there was a full batch.
type Dispatcher struct {
	Store    *Store
	Enqueue  func(ctx context.Context, id int64) error
	Interval time.Duration
	Batch    int
	Logger   *slog.Logger
}

// Run dispatches until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := d.Store.Dispatch(cctx, d.Batch, d.Enqueue)
			cancel()
			if err != nil && ctx.Err() == nil {
				d.Logger.WarnContext(ctx, "event dispatch failed; retrying", slog.String("error", err.Error()))
			}
			if n < d.Batch || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
