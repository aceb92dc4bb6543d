// Package service assembles connectrelay's two processes from a
// [config.Config]: the receiver, which answers Atlassian, and the worker,
// which does the slow work and calls the vendor's hooks.
//
// A vendor's worker binary is one call:
//
//	func main() {
//		service.RunWorker(service.WorkerOptions{Initializer: onboarding{}, Importer: importer{}})
//	}
//
// RunWorker and RunReceiver read the configuration from the environment, run
// until SIGINT or SIGTERM and shut down gracefully. NewWorker and NewReceiver
// build the same processes from a Config for a vendor who embeds them.
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/tasks"
)

// RunWorker is the whole main function of a worker binary: it loads the
// configuration from the environment, builds the worker with opts, runs it
// until SIGINT or SIGTERM, and exits non-zero on failure (2 for a
// configuration error). opts.Logger defaults to JSON on standard error at
// LOG_LEVEL.
func RunWorker(opts WorkerOptions) {
	run("worker", &opts.Logger, func(ctx context.Context, cfg config.Config) (runner, error) {
		return NewWorker(ctx, cfg, opts)
	})
}

// RunReceiver is RunWorker for the receiver.
func RunReceiver(opts ReceiverOptions) {
	run("receiver", &opts.Logger, func(ctx context.Context, cfg config.Config) (runner, error) {
		return NewReceiver(ctx, cfg, opts)
	})
}

// runner is a process body: a Receiver or a Worker.
type runner interface {
	Run(ctx context.Context) error
}

func run(name string, logger **slog.Logger, build func(ctx context.Context, cfg config.Config) (runner, error)) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(name, cfg, os.Stderr))
	}
	if *logger == nil {
		*logger = newLogger(os.Stderr, cfg.LogLevel).With(slog.String("process", name))
	}
	log := *logger
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := build(ctx, cfg)
	if err != nil {
		log.Error(name+" failed to start", slog.Any("error", err))
		os.Exit(1)
	}
	if err := r.Run(ctx); err != nil {
		log.Error(name+" stopped with an error", slog.Any("error", err))
		os.Exit(1)
	}
}

// newLogger builds the JSON logger both processes log with.
func newLogger(w io.Writer, level string) *slog.Logger {
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

// migrateTimeout bounds schema migration at start-up; several processes starting
// at once wait for each other on an advisory lock.
const migrateTimeout = 60 * time.Second

// stores are the durable dependencies both processes share.
type stores struct {
	pool    *pgxpool.Pool
	redis   redis.UniversalClient
	tenants *tenant.Store
	hosts   *connect.HostPolicy
}

// openStores fills in the default logger and metrics and opens what both
// processes share: Postgres (migrated), Redis, the tenant store and the product
// host policy.
func openStores(ctx context.Context, cfg config.Config, logger **slog.Logger, m **metrics.Metrics) (*stores, error) {
	if *logger == nil {
		*logger = newLogger(os.Stderr, cfg.LogLevel)
	}
	if *m == nil {
		*m = metrics.New()
	}
	hosts, err := connect.NewHostPolicy(cfg.ProductHosts)
	if err != nil {
		return nil, fmt.Errorf("CONNECT_PRODUCT_HOSTS: %w", err)
	}
	box, err := tenant.NewSecretBox(cfg.SecretKey, cfg.PreviousSecretKeys...)
	if err != nil {
		return nil, fmt.Errorf("CONNECT_SECRET_KEY: %w", err)
	}
	pool, err := schema.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	err = schema.Migrate(mctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate schema: %w", err)
	}
	rdb, err := tasks.OpenRedis(cfg.RedisURL)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &stores{pool: pool, redis: rdb, tenants: tenant.NewStore(pool, box, *logger), hosts: hosts}, nil
}

// forgeClient is the client both processes call Forge installations with:
// the product and the Forge migration API on each installation's verified
// apiBaseUrl (host in FORGE_API_HOSTS), with the system token creds hold.
func forgeClient(cfg config.Config, creds product.ForgeCredentialSource, hc *http.Client, attempts int,
	log *slog.Logger, m *metrics.Metrics) (*product.ForgeAMP, error) {
	fa, err := product.NewForgeAMP(product.ForgeAMPConfig{
		Credentials: creds,
		APIHosts:    cfg.ForgeAPIHosts,
		HTTP: product.Config{
			UserAgent:   "connectrelay/" + connectrelay.Version + " " + cfg.AppKey,
			HTTPClient:  hc,
			MaxAttempts: attempts,
			Logger:      log,
			Observe:     func(method, route string, status int, _ error) { m.ObserveOutbound(method, route, status) },
		},
		Download: hc,
	}, product.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("forge client: %w", err)
	}
	return fa, nil
}

func (s *stores) close() {
	_ = s.redis.Close()
	s.pool.Close()
}

// newHTTPServer is every HTTP server of the service: bounded header reads,
// request reads and idle connections, and header size. write bounds writing a
// response; 0 leaves it unbounded, for a listener that streams uploads.
func newHTTPServer(h http.Handler, write time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      write,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// healthcheck is the "healthcheck" subcommand of both binaries, for container
// health checks (the image has no shell or curl): it asks the running process
// on this host whether it is ready (the receiver's /readyz, the worker's
// /healthz on WORKER_METRICS_ADDR) and returns the exit code, 0 when it is.
func healthcheck(name string, cfg config.Config, stderr io.Writer) int {
	addr, path := cfg.ListenAddr, "/readyz"
	if name == "worker" {
		addr, path = cfg.WorkerMetricsAddr, "/healthz"
		if addr == "" {
			fmt.Fprintln(stderr, "worker healthcheck: WORKER_METRICS_ADDR is off; nothing to ask")
			return 1
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: listen address %q: %v\n", name, addr, err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", name, err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", name, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "%s healthcheck: GET %s: %s %s\n", name, u, resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	return 0
}
