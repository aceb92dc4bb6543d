package migration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/outbox"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errRolledBack is returned when COMMIT answers ROLLBACK: the transaction had
// failed, so nothing of it was written.
var errRolledBack = errors.New("transaction rolled back by the server")

// rollbackTimeout bounds the ROLLBACK of a failed pipelined transaction; it
// runs after the caller's context may have ended.
const rollbackTimeout = 2 * time.Second

// pipeTx is one transaction on one pooled connection whose statements travel
// in as few round trips as its logic allows: BEGIN is sent with the first
// batch and COMMIT with the last, and each batch is one pipeline (all its
// statements, then one Sync). An event's transaction reads, decides in Go and
// writes; sent one statement at a time it costs a round trip per statement,
// and the worker's throughput is bounded by those round trips, not by the
// work Postgres does.
//
// Statements run in the order queued, and their callbacks in that order as
// the results arrive. A statement that fails makes Postgres skip the rest of
// its batch, COMMIT included, and inPipeTx rolls the transaction back. A
// callback that fails on its own ends the batch too, but Postgres has already
// run the statements after it: callbacks queued in the batch of commit only
// scan their row into variables (decisions are made after a flush).
type pipeTx struct {
	conn    *pgx.Conn
	begun   bool
	pending pgx.Batch
}

// inPipeTx runs fn in a pipelined transaction on a connection of pool. fn
// queues statements, flushes them when it needs a result, and ends with
// commit; an error from fn, or a transaction fn left open, is rolled back (a
// connection that cannot roll back is closed, never returned to the pool
// inside a transaction).
func inPipeTx(ctx context.Context, pool *pgxpool.Pool, fn func(p *pipeTx) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	p := &pipeTx{conn: conn.Conn()}
	err = fn(p)
	if err == nil && p.conn.PgConn().TxStatus() != 'I' {
		err = errors.New("pipelined transaction left open") // a bug of fn: never committed
	}
	if err != nil && !p.conn.IsClosed() && p.conn.PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if _, rerr := p.conn.Exec(rctx, "ROLLBACK"); rerr != nil {
			_ = p.conn.Close(rctx)
		}
	}
	return err
}

// exec queues a statement whose result is not read; its error is wrapped
// with what.
func (p *pipeTx) exec(what, sql string, args ...any) {
	p.pending.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// queryRow queues a statement returning one row, scanned into dest when its
// result arrives; an error (pgx.ErrNoRows for no row) is wrapped with what.
func (p *pipeTx) queryRow(what, sql string, args []any, dest ...any) {
	p.pending.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		if err := br.QueryRow().Scan(dest...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// query queues a statement returning rows, each handed to scan as it
// arrives; an error is wrapped with what.
func (p *pipeTx) query(what, sql string, args []any, scan func(pgx.CollectableRow) error) {
	p.pending.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		rows, _ := br.Query()
		_, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) { return struct{}{}, scan(r) })
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// appendEvent queues outbox.Queue's append of an event to the feed, its
// error wrapped as outbox.Append wraps it. The error returned is an encoding
// failure.
func (p *pipeTx) appendEvent(clientKey string, typ connectrelay.EventType, transferID string, data outbox.Data) error {
	if err := outbox.Queue(&p.pending, clientKey, typ, transferID, data); err != nil {
		return err
	}
	p.pending.QueuedQueries[len(p.pending.QueuedQueries)-1].Fn = func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("append %s event: %w", typ, err)
		}
		return nil
	}
	return nil
}

// flush sends the queued statements (after BEGIN, the first time) in one
// round trip and runs their callbacks. Call it when the logic needs a result.
func (p *pipeTx) flush(ctx context.Context) error {
	qs := p.pending.QueuedQueries
	p.pending = pgx.Batch{}
	if !p.begun {
		qs = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, qs...)
		p.begun = true
	}
	if len(qs) == 0 {
		return nil
	}
	return p.conn.SendBatch(ctx, &pgx.Batch{QueuedQueries: qs}).Close()
}

// commit sends the queued statements and COMMIT in one round trip.
func (p *pipeTx) commit(ctx context.Context) error {
	p.pending.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			return errRolledBack
		}
		return nil
	})
	return p.flush(ctx)
}
