package pgpipe_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay/internal/pgpipe"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return conn
}

func rows(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM kv`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRun_ReadDecideWriteCommitsInTwoRoundTrips(t *testing.T) {
	t.Parallel()
	conn := connect(t)
	err := pgpipe.Run(t.Context(), conn, func(tx *pgpipe.Tx) error {
		var n int
		tx.Queue(`SELECT count(*) FROM kv`).QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
		if err := tx.Flush(t.Context()); err != nil {
			return err
		}
		if conn.PgConn().TxStatus() != 'T' {
			t.Errorf("after the first flush the connection is not in a transaction")
		}
		tx.Queue(`INSERT INTO kv VALUES ('a', $1)`, n+1)
		tx.Queue(`INSERT INTO kv VALUES ('b', $1)`, n+2)
		return tx.Commit(t.Context())
	})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := rows(t, conn); got != 2 || conn.PgConn().TxStatus() != 'I' {
		t.Errorf("%d rows, tx status %c; want 2 committed, idle", got, conn.PgConn().TxStatus())
	}
}

func TestRun_RollsBackWhatFailsOrIsLeftOpen(t *testing.T) {
	t.Parallel()
	boom := errors.New("decided against it")
	tests := []struct {
		name string
		fn   func(tx *pgpipe.Tx) error
		want string
	}{
		{"a statement of the commit batch fails", func(tx *pgpipe.Tx) error {
			tx.Queue(`INSERT INTO kv VALUES ('a', 1)`)
			tx.Queue(`INSERT INTO kv VALUES ('a', 2)`) // duplicate key
			return tx.Commit(t.Context())
		}, "duplicate key"},
		{"fn returns an error after a flush", func(tx *pgpipe.Tx) error {
			tx.Queue(`INSERT INTO kv VALUES ('a', 1)`)
			if err := tx.Flush(t.Context()); err != nil {
				return err
			}
			return boom
		}, boom.Error()},
		{"fn never commits", func(tx *pgpipe.Tx) error {
			tx.Queue(`INSERT INTO kv VALUES ('a', 1)`)
			return tx.Flush(t.Context())
		}, "left open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := connect(t)
			err := pgpipe.Run(t.Context(), conn, tc.fn)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.want)
			}
			if conn.PgConn().TxStatus() != 'I' {
				t.Errorf("tx status %c after the failure, want idle (rolled back)", conn.PgConn().TxStatus())
			}
			if got := rows(t, conn); got != 0 {
				t.Errorf("%d rows after the failure, want 0", got)
			}
		})
	}
}
