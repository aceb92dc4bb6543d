package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/tasks"
)

// Worker polling intervals. asynq's defaults (1 s and 5 s) would add up to a
// second to every task's pickup and five to every retry (STACK-NOTES §2).
const (
	TaskCheckInterval        = 50 * time.Millisecond
	DelayedTaskCheckInterval = 500 * time.Millisecond
)

// WorkerOptions customise the worker; every field is optional.
type WorkerOptions struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Initializer is the vendor's tenant initialization (no-op when nil).
	Initializer tasks.TenantInitializer
	// Listener receives enabled, disabled and uninstalled (ignored when nil).
	Listener tasks.LifecycleListener
	// Importer is the vendor's MigrationImporter; the bundled one records label,
	// size and SHA-256 of each upload in Postgres.
	Importer migration.Importer
	// HTTPClient calls the product (and presigned download URLs); tests pass
	// one with short timeouts.
	HTTPClient *http.Client
	// MetricsListener, when set, serves /metrics on it instead of on
	// cfg.WorkerMetricsAddr.
	MetricsListener net.Listener
	// RetryDelay replaces tasks.RetryDelay (tests use a short constant delay).
	RetryDelay asynq.RetryDelayFunc
	// Product tunes the outbound client (attempts, backoff); AppKey, Hosts,
	// HTTPClient, Logger and Observe are always set by the worker.
	Product product.Config
}

// Worker is an assembled worker: call Run to process tasks until ctx ends.
type Worker struct {
	cfg       config.Config
	opts      WorkerOptions
	stores    *stores
	server    *asynq.Server
	scheduler *asynq.Scheduler
	handler   *tasks.Worker
	queue     *asynq.Client
}

// NewWorker connects to Postgres (applying migrations) and Redis and builds the
// task handlers.
func NewWorker(ctx context.Context, cfg config.Config, opts WorkerOptions) (*Worker, error) {
	st, hosts, err := prepare(ctx, cfg, &opts.Logger, &opts.Metrics)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, opts: opts, stores: st}
	if err := w.build(hosts); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *Worker) build(hosts *connect.HostPolicy) error {
	cfg, log := w.cfg, w.opts.Logger
	pc := w.opts.Product
	pc.AppKey, pc.Hosts, pc.Logger = cfg.AppKey, hosts, log
	pc.HTTPClient = w.opts.HTTPClient
	pc.Observe = func(method, route string, status int, _ error) { w.opts.Metrics.ObserveOutbound(method, route, status) }
	client, err := product.New(pc, tenantTargets{w.stores.tenants})
	if err != nil {
		return fmt.Errorf("product client: %w", err)
	}
	// A nil download client makes amp use its own: no overall timeout (files
	// may be gigabytes), a stall watchdog, no transparent decompression.
	ampClient := product.NewAMP(client, w.opts.HTTPClient)
	w.queue = asynq.NewClientFromRedisClient(w.stores.redis)
	enq := tasks.NewEnqueuer(w.queue)
	importer := w.opts.Importer
	if importer == nil {
		importer = migration.NewRecordingImporter(w.stores.pool)
	}
	machine, err := migration.NewMachine(w.stores.pool, ampAdapter{ampClient}, importer, tasks.ImportScheduler{Enqueuer: enq},
		migration.Options{FinalLabel: cfg.MigrationFinalLabel, Logger: log})
	if err != nil {
		return fmt.Errorf("migration machine: %w", err)
	}
	w.handler, err = tasks.NewWorker(tasks.WorkerDeps{
		Tenants:     w.stores.tenants,
		Product:     client,
		Webhooks:    ampClient,
		WebhookURL:  cfg.MigrationWebhookURL(),
		Initializer: w.opts.Initializer,
		Listener:    w.opts.Listener,
		Migration:   tasks.MigrationDeps{Runner: machine, Dedupe: dedupe.New(w.stores.redis, dedupe.Options{})},
		Enqueuer:    enq,
		Metrics:     w.opts.Metrics,
		Logger:      log,
	})
	if err != nil {
		return err
	}
	retryDelay := w.opts.RetryDelay
	if retryDelay == nil {
		retryDelay = tasks.RetryDelay
	}
	w.server = asynq.NewServerFromRedisClient(w.stores.redis, asynq.Config{
		Concurrency:              cfg.WorkerConcurrency,
		Queues:                   tasks.Queues,
		StrictPriority:           true,
		TaskCheckInterval:        TaskCheckInterval,
		DelayedTaskCheckInterval: DelayedTaskCheckInterval,
		RetryDelayFunc:           retryDelay,
		IsFailure:                tasks.IsFailure,
		ErrorHandler:             w.handler.ErrorHandler(),
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{log.With(slog.String("component", "asynq"))},
		LogLevel:                 asynq.WarnLevel,
	})
	// The scheduler gets a connection of its own: on a shared client its
	// Shutdown logs an error for the close it is not allowed to do.
	connOpt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	w.scheduler = asynq.NewScheduler(connOpt, &asynq.SchedulerOpts{
		Logger:   asynqLogger{log.With(slog.String("component", "asynq-scheduler"))},
		LogLevel: asynq.WarnLevel,
	})
	sweep, sweepOpts := tasks.LicenseSweepTask()
	if _, err := w.scheduler.Register(tasks.LicenseSweepSchedule, sweep, sweepOpts...); err != nil {
		return fmt.Errorf("schedule license sweep: %w", err)
	}
	settle, settleOpts := tasks.SettleSweepTask()
	if _, err := w.scheduler.Register(tasks.SettleSweepSchedule, settle, settleOpts...); err != nil {
		return fmt.Errorf("schedule settle sweep: %w", err)
	}
	return nil
}

// Run processes tasks until ctx ends, then stops taking tasks and waits up to
// cfg.ShutdownTimeout for running ones; asynq puts unfinished tasks back in
// their queue, so another worker runs them.
func (w *Worker) Run(ctx context.Context) error {
	defer w.close()
	metricsSrv, err := w.serveMetrics()
	if err != nil {
		return err
	}
	stopMetrics := func() {
		if metricsSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = metricsSrv.Shutdown(sctx)
		}
	}
	if err := w.server.Start(w.handler.Mux()); err != nil {
		stopMetrics()
		return fmt.Errorf("start asynq server: %w", err)
	}
	if err := w.scheduler.Start(); err != nil {
		w.server.Shutdown()
		stopMetrics()
		return fmt.Errorf("start asynq scheduler: %w", err)
	}
	w.opts.Logger.Info("worker started", slog.Int("concurrency", w.cfg.WorkerConcurrency))
	<-ctx.Done()
	w.opts.Logger.Info("worker shutting down")
	w.scheduler.Shutdown()
	w.server.Shutdown()
	stopMetrics()
	w.opts.Logger.Info("worker stopped")
	return nil
}

func (w *Worker) serveMetrics() (*http.Server, error) {
	ln := w.opts.MetricsListener
	if ln == nil {
		if w.cfg.WorkerMetricsAddr == "" {
			return nil, nil
		}
		var err error
		if ln, err = net.Listen("tcp", w.cfg.WorkerMetricsAddr); err != nil {
			return nil, fmt.Errorf("listen on WORKER_METRICS_ADDR %s: %w", w.cfg.WorkerMetricsAddr, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", w.opts.Metrics.Handler())
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.opts.Logger.Error("worker metrics server stopped", slog.String("error", err.Error()))
		}
	}()
	return srv, nil
}

func (w *Worker) close() {
	if w.queue != nil {
		_ = w.queue.Close()
	}
	w.stores.close()
}

// tenantTargets resolves a tenant's current baseUrl and secret for every
// outbound call, so a rename or a rotation takes effect at once.
type tenantTargets struct{ store *tenant.Store }

func (t tenantTargets) Target(ctx context.Context, clientKey string) (product.Target, error) {
	tn, err := t.store.Get(ctx, clientKey)
	if err != nil {
		return product.Target{}, err
	}
	secret, err := t.store.SharedSecret(ctx, clientKey)
	if err != nil {
		return product.Target{}, err
	}
	return product.Target{ClientKey: clientKey, BaseURL: tn.BaseURL, Secret: secret}, nil
}

// ampAdapter maps the migration machine's view of AMP onto the amp client.
type ampAdapter struct{ c *product.AMP }

func (a ampAdapter) OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error) {
	rc, err := a.c.OpenData(ctx, clientKey, s3Key)
	if err != nil {
		return nil, mapAMPErr(err)
	}
	return rc, nil
}

func (a ampAdapter) ReportProgress(ctx context.Context, clientKey, transferID string, p migration.Progress) error {
	return mapAMPErr(a.c.ReportProgress(ctx, clientKey, transferID, product.Progress{Status: p.Status, Percent: p.Percent, Message: p.Message}))
}

func (a ampAdapter) ListData(ctx context.Context, clientKey, transferID string) ([]string, error) {
	uploads, err := a.c.ListData(ctx, clientKey, transferID)
	if err != nil {
		return nil, mapAMPErr(err)
	}
	keys := make([]string, len(uploads))
	for i, u := range uploads {
		keys[i] = u.S3Key
	}
	return keys, nil
}

// mapAMPErr translates the AMP client's final answers into the machine's
// sentinels (the machine does not import the client).
func mapAMPErr(err error) error {
	switch {
	case errors.Is(err, product.ErrTransferSettled):
		return fmt.Errorf("%w: %w", migration.ErrTransferSettled, err)
	case errors.Is(err, product.ErrTransferExpired):
		return fmt.Errorf("%w: %w", migration.ErrTransferExpired, err)
	default:
		return err
	}
}

func (a ampAdapter) ErrorDetails(ctx context.Context, clientKey, transferID string) (json.RawMessage, error) {
	return a.c.ErrorDetails(ctx, clientKey, transferID)
}

// asynqLogger bridges asynq's logger interface to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...))
	os.Exit(1)
}
