// Package service assembles the receiver and the worker from a Config. The
// binaries in cmd/ call it with the bundled defaults; a vendor calls it from their
// own main with their own TenantInitializer and MigrationImporter (see the README
// and example_test.go), so they never have to copy the wiring.
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/tasks"
)

// NewLogger builds the JSON slog logger both binaries log with.
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// DefaultLogger is NewLogger on standard error.
func DefaultLogger(cfg config.Config) *slog.Logger { return NewLogger(os.Stderr, cfg.LogLevel) }

// MigrateTimeout bounds schema migration at start-up; several processes starting
// at once wait for each other on an advisory lock.
const MigrateTimeout = 60 * time.Second

// stores are the durable dependencies both processes share.
type stores struct {
	pool    *pgxpool.Pool
	redis   *redis.Client
	tenants *tenant.Store
}

// prepare fills in the default logger and metrics and opens what both processes
// share: the stores and the product host policy.
func prepare(ctx context.Context, cfg config.Config, logger **slog.Logger, m **metrics.Metrics) (*stores, *connect.HostPolicy, error) {
	if *logger == nil {
		*logger = DefaultLogger(cfg)
	}
	if *m == nil {
		*m = metrics.New()
	}
	hosts, err := connect.NewHostPolicy(cfg.ProductHosts)
	if err != nil {
		return nil, nil, fmt.Errorf("CONNECT_PRODUCT_HOSTS: %w", err)
	}
	st, err := openStores(ctx, cfg, *logger)
	if err != nil {
		return nil, nil, err
	}
	return st, hosts, nil
}

func openStores(ctx context.Context, cfg config.Config, logger *slog.Logger) (*stores, error) {
	pool, err := schema.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, MigrateTimeout)
	defer cancel()
	if err := schema.Migrate(mctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate schema: %w", err)
	}
	box, err := tenant.NewSecretBox(cfg.SecretKey, cfg.PreviousSecretKeys...)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("secret box: %w", err)
	}
	rdb, err := tasks.OpenRedis(cfg.RedisURL)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &stores{pool: pool, redis: rdb, tenants: tenant.NewStore(pool, box, logger)}, nil
}

func (s *stores) close() {
	_ = s.redis.Close()
	s.pool.Close()
}

// Runner is a process body: the Receiver or the Worker.
type Runner interface {
	Run(ctx context.Context) error
}

// Main is the whole main function of a binary: load the configuration from the
// environment, build the process with start, run it until SIGINT or SIGTERM, and
// exit non-zero on failure (2 for a configuration error).
func Main(name string, start func(ctx context.Context, cfg config.Config, log *slog.Logger) (Runner, error)) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	log := DefaultLogger(cfg).With(slog.String("process", name))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := start(ctx, cfg, log)
	if err != nil {
		log.Error(name+" failed to start", slog.Any("error", err))
		os.Exit(1)
	}
	if err := r.Run(ctx); err != nil {
		log.Error(name+" stopped with an error", slog.Any("error", err))
		os.Exit(1)
	}
}
