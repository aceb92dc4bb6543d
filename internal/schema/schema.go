// Package schema owns the PostgreSQL schema of connectrelay: the SQL migrations
// embedded in the binaries, the runner that applies them, and the construction of the
// connection pool both binaries share.
//
// Both the receiver and the worker call Migrate on start. Several processes may start
// at once, so the runner serialises itself with a Postgres advisory lock and applies
// each migration exactly once, in its own transaction.
package schema

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var embedded embed.FS

// migrateLockKey is the pg_advisory_lock key every connectrelay process takes while
// migrating ("connrela" in ASCII). It is fixed forever: processes of different
// versions must agree on it.
const migrateLockKey int64 = 0x636f6e6e72656c61

// migration is one embedded SQL file, named NNNN_description.sql.
type migration struct {
	version  int64
	name     string
	sql      string
	checksum string
}

// loadMigrations reads every migrations/*.sql file of fsys and returns them in
// numeric version order. Names must start with a decimal version followed by "_";
// two files with one version are an error, so a merge that collides is caught at
// start-up rather than applying one of them silently.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var ms []migration
	seen := make(map[int64]string)
	for _, p := range names {
		base := path.Base(p)
		digits, _, ok := strings.Cut(base, "_")
		if !ok || digits == "" {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", base)
		}
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: version %q is not a positive integer", base, digits)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, base, v)
		}
		seen[v] = base
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", base, err)
		}
		sum := sha256.Sum256(b)
		ms = append(ms, migration{version: v, name: base, sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	slices.SortFunc(ms, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	return ms, nil
}

// Migrate brings the database up to the newest embedded migration. It is safe to call
// from several processes at once and any number of times: it holds a session-level
// pg_advisory_lock on one pooled connection for its whole run, records each applied
// migration in schema_migrations, and applies each pending migration and its record in
// one transaction, so a failed migration leaves nothing behind and is retried by the
// next start.
//
// A migration already applied whose embedded text has changed is an error: an edited
// migration would never run again, so the schema would silently differ from the code.
// Versions recorded in the database but unknown to this binary (a newer binary ran
// first, as in a rolling deploy) are left alone.
//
// Migrate blocks while another process holds the lock; ctx bounds that wait. A
// connection that does not open within the pool's connect timeout (a busy or
// restarting Postgres: *pgconn.ConnectError) is tried again, up to
// MaxConnectAttempts times and while ctx lasts, so one slow connect does not fail a
// start-up; any other error is returned at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate(ctx, pool, embedded)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (err error) {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return err
	}
	conn, err := acquireRetrying(ctx, pool)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	defer func() {
		// Unlock with a context of its own: ctx may be the reason we are leaving. If the
		// unlock fails, close the connection so the lock cannot leak into the pool.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); uerr != nil {
			_ = conn.Conn().Close(uctx)
			err = errors.Join(err, fmt.Errorf("migrate: release advisory lock: %w", uerr))
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    bigint PRIMARY KEY,
		name       text NOT NULL,
		checksum   text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied, err := appliedMigrations(ctx, conn.Conn())
	if err != nil {
		return err
	}
	for _, m := range ms {
		if sum, ok := applied[m.version]; ok {
			if sum != m.checksum {
				return fmt.Errorf("migrate: migration %s was changed after it was applied (checksum %s, applied %s)", m.name, m.checksum, sum)
			}
			continue
		}
		if err := apply(ctx, conn.Conn(), m); err != nil {
			return err
		}
	}
	return nil
}

// MaxConnectAttempts bounds how many times Migrate tries to open its connection
// while Postgres does not accept one in time.
const MaxConnectAttempts = 10

// connectRetryDelay is the pause between two of Migrate's connection attempts.
const connectRetryDelay = 250 * time.Millisecond

// acquireRetrying acquires a pooled connection, trying again on connection errors
// (not on a cancelled ctx or any other failure).
func acquireRetrying(ctx context.Context, pool *pgxpool.Pool) (*pgxpool.Conn, error) {
	for attempt := 1; ; attempt++ {
		conn, err := pool.Acquire(ctx)
		var connectErr *pgconn.ConnectError
		if err == nil || !errors.As(err, &connectErr) || attempt == MaxConnectAttempts || ctx.Err() != nil {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(connectRetryDelay):
		}
	}
}

func appliedMigrations(ctx context.Context, conn *pgx.Conn) (map[int64]string, error) {
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	applied := make(map[int64]string)
	var v int64
	var sum string
	if _, err := pgx.ForEachRow(rows, []any{&v, &sum}, func() error {
		applied[v] = sum
		return nil
	}); err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	return applied, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m migration) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// No arguments: pgx uses the simple protocol, which runs a multi-statement file.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx,
			"INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
			m.version, m.name, m.checksum); err != nil {
			return fmt.Errorf("migrate: record %s: %w", m.name, err)
		}
		return nil
	})
}
