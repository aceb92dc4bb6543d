package schema

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool defaults. The receiver must answer 503 within 1 s when Postgres is unreachable,
// so connecting and pinging are bounded well under that; the rest are pgx's defaults
// tightened for a small service.
const (
	// DefaultConnectTimeout bounds one connection attempt to one address (pgx applies it
	// per resolved address, so a host name with two addresses can take twice as long).
	DefaultConnectTimeout = 500 * time.Millisecond
	// DefaultMaxConns is the pool size when the URL has no pool_max_conns.
	DefaultMaxConns = 10
	// DefaultPingTimeout bounds the liveness ping pgxpool sends on a connection that
	// sat idle before handing it out, so a dead server is noticed quickly.
	DefaultPingTimeout = 500 * time.Millisecond
	// DefaultHealthCheckPeriod is how often idle connections are checked and closed
	// connections replaced.
	DefaultHealthCheckPeriod = 15 * time.Second
	// DefaultMaxConnIdleTime closes connections idle this long.
	DefaultMaxConnIdleTime = 5 * time.Minute
	// DefaultPingDeadline is the deadline Ping applies when its context has none.
	DefaultPingDeadline = time.Second
)

// Open builds the connection pool both binaries use from a Postgres URL (or keyword/value
// string). It does not connect: pgxpool opens connections lazily, so a process whose
// Postgres is down at start-up still starts, answers /healthz, and reports the outage
// per request (503) and on /readyz; every query then fails fast, after at most
// DefaultConnectTimeout per address, instead of hanging.
//
// Settings given in the URL win: connect_timeout (whole seconds) replaces
// DefaultConnectTimeout and pool_max_conns replaces DefaultMaxConns. An error is
// returned only for a URL that cannot be parsed; pgx redacts the password in it.
func Open(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.PingTimeout = DefaultPingTimeout
	cfg.HealthCheckPeriod = DefaultHealthCheckPeriod
	cfg.MaxConnIdleTime = DefaultMaxConnIdleTime
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create database pool: %w", err)
	}
	return pool, nil
}

// Ping checks that Postgres answers, for readiness probes. Without a deadline on ctx it
// applies DefaultPingDeadline, so a probe never hangs on a black-holed server.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPingDeadline)
		defer cancel()
	}
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}
