// Package ops implements the operator commands of connectctl: reading tenants
// and transfers, the missed-uninstall report, re-encrypting secrets after a key
// rotation and running archived tasks again. It reads through internal/tenant
// and internal/migration; cmd/connectctl only parses arguments and prints.
//
// Nothing here prints or returns a shared secret: the tenant views carry the
// id of the key that encrypts it, never the secret.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

// ConnectTimeout bounds how long Open (and OpenQueue) wait for the database
// (or Redis) to answer, so that an operator is told within 2 s that it does
// not.
const ConnectTimeout = 1500 * time.Millisecond

// Errors callers branch on.
var (
	// ErrUnreachable means the database or Redis did not answer within
	// ConnectTimeout.
	ErrUnreachable = errors.New("does not answer")
	// ErrInvalidArgument means a command was given a value it cannot use; the
	// message names the argument.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound means the tenant or transfer named does not exist.
	ErrNotFound = errors.New("not found")
)

// DB is an open connection to the service's database for the operator
// commands. It is safe for concurrent use.
type DB struct {
	pool      *pgxpool.Pool
	tenants   *tenant.Store
	transfers *migration.Reader
	log       *slog.Logger
	now       func() time.Time
	hasBox    bool
}

// Open connects to the database at databaseURL and checks within
// ConnectTimeout that it answers (errors wrap ErrUnreachable). It applies no
// migration: the service's own processes do. box may be nil for every command
// but Reencrypt; a nil logger discards logs; a nil now is time.Now.
func Open(ctx context.Context, databaseURL string, box *tenant.SecretBox, logger *slog.Logger, now func() time.Time) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	pool, err := schema.Open(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database at %s %w within %s: %w", where(databaseURL), ErrUnreachable, ConnectTimeout, err)
	}
	return &DB{
		pool:      pool,
		tenants:   tenant.NewStore(pool, box, logger),
		transfers: migration.NewReader(pool),
		log:       logger,
		now:       now,
		hasBox:    box != nil,
	}, nil
}

// Close closes the connections.
func (d *DB) Close() { d.pool.Close() }

// where is the host:port of a service URL, for error messages (never its
// credentials).
func where(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(DATABASE_URL)"
	}
	return u.Host
}

// notFound maps the stores' not-found sentinels onto ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, tenant.ErrNotFound) || errors.Is(err, migration.ErrTransferNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
