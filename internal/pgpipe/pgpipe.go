// Package pgpipe runs a PostgreSQL transaction whose statements travel in as
// few round trips as its logic allows.
//
// A lifecycle write or a migration event reads a row under its lock, decides
// in Go, and writes. Sent one statement at a time that costs a round trip per
// statement (BEGIN, the read, each write, COMMIT), and on a small machine the
// receiver's and the worker's throughput is bounded by those round trips on
// both ends, not by the work Postgres does. A Tx sends BEGIN with its first
// batch and COMMIT with its last, and each batch is one pgx pipeline (every
// statement, then one Sync), so such a transaction costs two round trips.
//
// Statements run in the order queued, and their callbacks in that order as
// the results arrive. A statement that fails makes Postgres skip the rest of
// its batch, COMMIT included, and Run rolls the transaction back. A callback
// that fails on its own ends the batch for pgx, but Postgres has already run
// the statements after it, COMMIT included: callbacks queued in the batch of
// Commit must only scan their rows into variables, and decisions are made
// after a Flush.
package pgpipe

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrRolledBack is returned when COMMIT answers ROLLBACK: the transaction had
// failed, so nothing of it was written.
var ErrRolledBack = errors.New("transaction rolled back by the server")

// rollbackTimeout bounds the ROLLBACK (or the close) of a failed
// transaction; it runs after the caller's context may have ended.
const rollbackTimeout = 250 * time.Millisecond

// Tx is one pipelined transaction on one connection. Its zero value is not
// usable; Run makes one.
type Tx struct {
	conn    *pgx.Conn
	begun   bool
	pending pgx.Batch
}

// Run runs fn in a pipelined transaction on conn, which the caller acquired
// and releases. fn queues statements, flushes them when it needs a result,
// and ends with Commit; an error from fn, or a transaction fn left open, is
// rolled back, and a connection that cannot roll back, or whose ctx has
// ended, is closed, so it never returns to a pool inside a transaction.
func Run(ctx context.Context, conn *pgx.Conn, fn func(tx *Tx) error) error {
	tx := &Tx{conn: conn}
	err := fn(tx)
	if err == nil && conn.PgConn().TxStatus() != 'I' {
		err = errors.New("pgpipe: transaction left open") // a bug of fn: never committed
	}
	if err != nil && !conn.IsClosed() && conn.PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		// Out of time (a callback's budget ended): closing the connection
		// ends the transaction without waiting for a server that may be the
		// reason. Otherwise roll back and keep the connection.
		if ctx.Err() != nil {
			_ = conn.Close(rctx)
		} else if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
			_ = conn.Close(rctx)
		}
	}
	return err
}

// Queue adds a statement to the next round trip; set a callback on the
// result to read it. A statement without a callback only has its error
// checked.
func (tx *Tx) Queue(sql string, args ...any) *pgx.QueuedQuery {
	return tx.pending.Queue(sql, args...)
}

// Batch is the batch of the next round trip, for helpers that queue on a
// *pgx.Batch.
func (tx *Tx) Batch() *pgx.Batch { return &tx.pending }

// Flush sends the queued statements (after BEGIN, the first time) in one
// round trip and runs their callbacks.
func (tx *Tx) Flush(ctx context.Context) error {
	qs := tx.pending.QueuedQueries
	tx.pending = pgx.Batch{}
	if !tx.begun {
		qs = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, qs...)
		tx.begun = true
	}
	if len(qs) == 0 {
		return nil
	}
	return tx.conn.SendBatch(ctx, &pgx.Batch{QueuedQueries: qs}).Close()
}

// Commit sends the queued statements and COMMIT in one round trip.
func (tx *Tx) Commit(ctx context.Context) error {
	tx.pending.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			return ErrRolledBack
		}
		return nil
	})
	return tx.Flush(ctx)
}
