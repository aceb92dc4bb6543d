package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay/internal/budget"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errRolledBack is returned when COMMIT answers ROLLBACK: the transaction had
// failed, so nothing of it was written.
var errRolledBack = errors.New("transaction rolled back by the server")

// pipeTx is one transaction on one pooled connection whose statements travel in
// as few round trips as its logic allows. BEGIN is sent with the first batch and
// COMMIT with the last, and every batch is one pipeline (pgx sends all its
// statements, then one Sync), so a lifecycle write that reads the tenant, decides
// in Go and writes costs two round trips instead of one per statement. The
// receiver's throughput on /enabled and /installed is bounded by those round
// trips on both ends, not by Postgres's work.
//
// Callbacks queued on a batch (pgx.QueuedQuery.QueryRow, Exec) run in order as
// the results arrive; the first error ends the batch, and inPipeTx rolls the
// transaction back.
type pipeTx struct {
	conn    *pgx.Conn
	begun   bool
	pending pgx.Batch
}

// rollbackTimeout bounds the ROLLBACK of a failed pipelined transaction; it
// runs after the caller's context may have ended.
const rollbackTimeout = 2 * time.Second

// inPipeTx runs fn in a pipelined transaction on a connection of the pool. fn
// queues statements, flushes them when it needs a result, and must end with
// commit; an error from fn, or a
// transaction fn left open, is rolled back (a connection that cannot roll back
// is closed, never returned to the pool inside a transaction).
func (s *Store) inPipeTx(ctx context.Context, fn func(p *pipeTx) error) error {
	// A callback's answer clock stops while Postgres keeps completing other
	// transactions: on a loaded machine this one is slow, not stuck.
	resume := budget.PauseWhile(ctx, StallTimeout, s.progress())
	defer resume()
	conn, err := s.acquire(ctx)
	if err != nil {
		return err
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
	if err == nil {
		s.committed.Add(1)
	}
	return err
}

// progress returns a function that reports whether a pipelined transaction
// of this Store committed since its last call (the first call: since now).
// Calls must not be concurrent.
func (s *Store) progress() func() bool {
	last := s.committed.Load()
	return func() bool {
		n := s.committed.Load()
		moved := n != last
		last = n
		return moved
	}
}

// queue adds a statement to the next round trip; set a callback on the result
// to read it. A statement without a callback only has its error checked.
func (p *pipeTx) queue(sql string, args ...any) *pgx.QueuedQuery {
	return p.pending.Queue(sql, args...)
}

// flush sends the queued statements (after BEGIN, the first time) in one round
// trip and runs their callbacks. Call it when the logic needs a result.
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
	p.queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			return errRolledBack
		}
		return nil
	})
	return p.flush(ctx)
}

// StallTimeout is how long a callback waiting for a pooled connection lets
// pass without any connection being handed out before it calls Postgres down.
const StallTimeout = 250 * time.Millisecond

// acquire takes a connection from the pool within ctx.
//
// For a callback (a ctx with a budget.New budget), waiting while every pooled
// connection is in use is "busy", not "down", as long as connections keep
// being handed out (inPipeTx does not count such waits against the answer
// budget). A wait in which no connection was handed out to anyone for two
// StallTimeouts means Postgres does not answer, and fails with ErrUnavailable
// at once. Other callers (the worker, whose transactions may hold connections
// for long) wait as ctx allows.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	if !budget.Active(ctx) {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire connection: %w", err)
		}
		return conn, nil
	}
	var handedOut int64 = -1 // unknown until the first wait times out
	for {
		actx, cancel := context.WithTimeout(ctx, StallTimeout)
		conn, err := s.pool.Acquire(actx)
		cancel()
		switch {
		case err == nil:
			return conn, nil
		case ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("acquire connection: %w", err)
		}
		n := s.pool.Stat().AcquireCount()
		if n == handedOut {
			return nil, fmt.Errorf("acquire connection: %w: no pooled connection handed out for %v", ErrUnavailable, StallTimeout)
		}
		handedOut = n
	}
}
