package migration

import (
	"context"
	"fmt"

	"github.com/connectrelay/connectrelay/internal/pgpipe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipeTx is an event's pipelined transaction (package pgpipe) with the
// helpers the machine queues its statements through.
type pipeTx struct {
	*pgpipe.Tx
}

// inPipeTx runs fn in a pipelined transaction on a connection of pool.
func inPipeTx(ctx context.Context, pool *pgxpool.Pool, fn func(p *pipeTx) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	return pgpipe.Run(ctx, conn.Conn(), func(tx *pgpipe.Tx) error { return fn(&pipeTx{tx}) })
}

// exec queues a statement whose result is not read; its error is wrapped
// with what.
func (p *pipeTx) exec(what, sql string, args ...any) {
	p.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// queryRow queues a statement returning one row, scanned into dest when its
// result arrives; an error (pgx.ErrNoRows for no row) is wrapped with what.
func (p *pipeTx) queryRow(what, sql string, args []any, dest ...any) {
	p.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		if err := br.QueryRow().Scan(dest...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}

// query queues a statement returning rows, each handed to scan as it
// arrives; an error is wrapped with what.
func (p *pipeTx) query(what, sql string, args []any, scan func(pgx.CollectableRow) error) {
	p.Queue(sql, args...).Fn = func(br pgx.BatchResults) error {
		rows, _ := br.Query()
		_, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) { return struct{}{}, scan(r) })
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}
