package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/connectrelay/connectrelay/internal/budget"
	"github.com/connectrelay/connectrelay/internal/pgpipe"

	"github.com/jackc/pgx/v5/pgxpool"
)

// inPipeTx runs fn in a pipelined transaction (package pgpipe) on a
// connection of the pool.
func (s *Store) inPipeTx(ctx context.Context, fn func(tx *pgpipe.Tx) error) error {
	// A callback's answer clock stops while Postgres keeps completing other
	// transactions: on a loaded machine this one is slow, not stuck.
	resume := budget.PauseWhile(ctx, StallTimeout, s.progress())
	defer resume()
	conn, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if err := pgpipe.Run(ctx, conn.Conn(), fn); err != nil {
		return err
	}
	s.committed.Add(1)
	return nil
}

// progress returns a function that reports whether a write transaction of
// this Store committed since its last call (the first call: since now).
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

// StallTimeout is how long a callback waiting for a pooled connection lets
// pass without any connection being handed out before it calls Postgres down.
const StallTimeout = 250 * time.Millisecond

// acquire takes a connection from the pool within ctx.
//
// For a callback (a ctx with a budget.New budget), waiting while every pooled
// connection is in use is "busy", not "down", as long as connections keep
// being handed out (inPipeTx does not count such waits against the answer
// budget). A wait in which no connection was handed out to anyone for two
// StallTimeouts in a row (after a first one without a free connection) means
// Postgres does not answer, and fails with ErrUnavailable at once. Other callers (the worker, whose transactions may hold connections
// for long) wait as ctx allows.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	if !budget.Active(ctx) {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire connection: %w", err)
		}
		return conn, nil
	}
	// Down only after two stall timeouts in a row in which nobody was handed
	// a connection: the first wait's count is the baseline.
	var handedOut int64 = -1
	idle := 0
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
			idle++
		} else {
			idle = 0
		}
		if idle == 2 {
			return nil, fmt.Errorf("acquire connection: %w: no pooled connection handed out for %v", ErrUnavailable, 2*StallTimeout)
		}
		handedOut = n
	}
}
