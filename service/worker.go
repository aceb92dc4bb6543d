package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/forward"
	"github.com/connectrelay/connectrelay/internal/lifecycle"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/internal/webhook"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/tasks"
)

// Worker polling intervals. asynq's defaults (1 s and 5 s) would add up to a
// second to every task's pickup and five to every retry. An idle worker sleeps
// between half and one and a half taskCheckInterval between dequeues (one
// script call over its queues), so the pickup delay averages about the
// interval. 20 ms brought the receiver-to-effect p50 at 200 events/s in
// bench/run.sh from 38 ms (at 50 ms) to 19 ms; 10 ms made idle workers cost
// enough CPU on a 2-core machine running many of them that request budgets
// ran out.
const (
	taskCheckInterval        = 20 * time.Millisecond
	delayedTaskCheckInterval = 500 * time.Millisecond
)

// eventDispatchInterval is how often a worker looks for events of the feed to
// hand to delivery tasks.
const eventDispatchInterval = 100 * time.Millisecond

// licenseSweepClaims prefixes the Redis keys of the daily license sweep's claim.
const licenseSweepClaims = "connectrelay:license-sweep:"

// WorkerOptions customise the worker; every field is optional.
type WorkerOptions struct {
	// Logger defaults to JSON on standard error at LOG_LEVEL.
	Logger *slog.Logger
	// Initializer runs after every verified installed; none when nil.
	Initializer connectrelay.Initializer
	// Listener hears the changes of tenants (installed, updated, enabled,
	// disabled, uninstalled, license changes, site imports); none when nil.
	Listener connectrelay.LifecycleListener
	// MigrationListener hears the changes of migration transfers (ready,
	// settled, events of unknown types); none when nil.
	MigrationListener connectrelay.MigrationListener
	// Importer receives each uploaded file of a migration. When nil, the
	// bundled importer records each upload's label, size and SHA-256 in the
	// migration_imported_data table.
	Importer connectrelay.Importer
	// ForgeCredentials gives the worker the apiBaseUrl and app system token
	// of Forge installations, for its calls to the product and the Forge
	// migration API on the apiBaseUrl's host (checked against
	// FORGE_API_HOSTS). When nil, the tenant store's, which holds what the
	// receiver stored from verified Forge deliveries.
	ForgeCredentials product.ForgeCredentialSource
	// Test holds settings for tests; production leaves it zero.
	Test WorkerTest
}

// WorkerTest holds the worker's settings for tests.
type WorkerTest struct {
	// HTTPClient, when set, makes the product calls and the migration data
	// downloads (tests pass one with short timeouts).
	HTTPClient *http.Client
	// MetricsListener, when set, serves /metrics and /healthz instead of
	// listening on WORKER_METRICS_ADDR.
	MetricsListener net.Listener
	// RetryDelay, when positive, is the delay of every task retry instead of
	// the exponential backoff.
	RetryDelay time.Duration
	// ProductAttempts, when positive, bounds the attempts of each product call
	// (default 4).
	ProductAttempts int
	// Metrics, when set, receives the worker's counters instead of a fresh set.
	Metrics *metrics.Metrics
	// ForwardClient, when set, sends the deliveries to FORWARD_URL.
	ForwardClient *http.Client
	// IdleTimeout, when positive, replaces the metrics server's keep-alive
	// idle timeout (2 minutes), so a test need not wait that long.
	IdleTimeout time.Duration
	// StaleInterval, when positive, replaces how often the stale sweep
	// counts the missed uninstalls (staleSweepInterval).
	StaleInterval time.Duration
}

// Worker is an assembled worker: call Run to process tasks until its context
// ends.
type Worker struct {
	cfg       config.Config
	log       *slog.Logger
	test      WorkerTest
	stores    *stores
	server    *asynq.Server
	scheduler *asynq.Scheduler
	handlers  *tasks.Handlers
	queue     *asynq.Client
	events    *outbox.Store
	enqueuer  *tasks.Enqueuer
}

// NewWorker connects to Postgres (applying migrations) and Redis and builds the
// task handlers around opts' hooks.
func NewWorker(ctx context.Context, cfg config.Config, opts WorkerOptions) (*Worker, error) {
	st, err := openStores(ctx, cfg, &opts.Logger, &opts.Test.Metrics)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: opts.Logger, test: opts.Test, stores: st}
	if err := w.build(opts); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *Worker) build(opts WorkerOptions) error {
	cfg, log, st, m := w.cfg, w.log, w.stores, w.test.Metrics
	client, err := product.New(product.Config{
		AppKey:      cfg.AppKey,
		UserAgent:   "connectrelay/" + connectrelay.Version + " " + cfg.AppKey,
		Hosts:       st.hosts,
		HTTPClient:  w.test.HTTPClient,
		MaxAttempts: w.test.ProductAttempts,
		Logger:      log,
		Observe:     func(method, route string, status int, _ error) { m.ObserveOutbound(method, route, status) },
	}, st.tenants)
	if err != nil {
		return fmt.Errorf("product client: %w", err)
	}
	// A nil download client makes the AMP client use its own: no overall
	// timeout (files may be gigabytes), a stall watchdog, no decompression.
	amp := product.NewAMP(client, w.test.HTTPClient, product.WithLogger(log))
	w.queue = asynq.NewClientFromRedisClient(st.redis)
	enq := tasks.NewEnqueuer(w.queue)
	w.enqueuer = enq
	if err := w.forwarding(&opts); err != nil {
		return err
	}
	importer := opts.Importer
	if importer == nil {
		importer = migration.NewRecordingImporter(st.pool)
	}
	creds := opts.ForgeCredentials
	if creds == nil {
		creds = st.tenants
	}
	forgeAPI, err := forgeClient(cfg, creds, w.test.HTTPClient, w.test.ProductAttempts, log, m)
	if err != nil {
		return err
	}
	router := migration.Router{Connect: amp, Forge: forgeAPI}
	machine, err := migration.NewMachine(st.pool, router, importer, enq,
		migration.Options{FinalLabel: cfg.MigrationFinalLabel, Logger: log})
	if err != nil {
		return fmt.Errorf("migration machine: %w", err)
	}
	w.events = outbox.NewStore(st.pool)
	life, err := lifecycle.New(lifecycle.Config{
		Tenants: st.tenants, Product: client, Webhooks: amp, WebhookURL: cfg.MigrationWebhookURL(),
		Events: w.events, Transfers: machine,
		Initializer: opts.Initializer, Listener: opts.Listener, MigrationListener: opts.MigrationListener, Logger: log,
		Forge: lifecycle.ForgeConfig{Store: st.tenants, API: forgeAPI},
	})
	if err != nil {
		return err
	}
	w.handlers, err = tasks.NewHandlers(tasks.Deps{
		Lifecycle:   life,
		Migration:   machine,
		Dedupe:      dedupe.New(st.redis, dedupe.Options{Logger: log}),
		SweepClaims: dedupe.New(st.redis, dedupe.Options{Prefix: licenseSweepClaims, Logger: log}),
		Enqueuer:    enq,
		Events:      w.events,
		Metrics:     m,
		Logger:      log,
	})
	if err != nil {
		return err
	}
	retryDelay := tasks.RetryDelay
	if d := w.test.RetryDelay; d > 0 {
		retryDelay = func(int, error, *asynq.Task) time.Duration { return d }
	}
	w.server = asynq.NewServerFromRedisClient(st.redis, asynq.Config{
		Concurrency:              cfg.WorkerConcurrency,
		Queues:                   tasks.Queues,
		StrictPriority:           true,
		TaskCheckInterval:        taskCheckInterval,
		DelayedTaskCheckInterval: delayedTaskCheckInterval,
		RetryDelayFunc:           retryDelay,
		IsFailure:                tasks.IsFailure,
		ErrorHandler:             w.handlers.ErrorHandler(),
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{log.With(slog.String("component", "asynq"))},
		LogLevel:                 asynq.WarnLevel,
	})
	// The scheduler gets a connection of its own: on a shared client its
	// Shutdown logs an error for the close it is not allowed to do.
	connOpt, err := tasks.RedisConnOpt(cfg.RedisURL)
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

// forwarding makes the bundled Forwarder the hooks opts leave nil, when
// FORWARD_URL is set: a Go vendor's own hooks are kept.
func (w *Worker) forwarding(opts *WorkerOptions) error {
	if w.cfg.ForwardURL == "" {
		return nil
	}
	secret, err := webhook.ParseSecret(w.cfg.ForwardSecret)
	if err != nil {
		return fmt.Errorf("FORWARD_SECRET: %w", err)
	}
	fwd, err := forward.New(forward.Config{
		URL: w.cfg.ForwardURL, Secret: secret, Timeout: w.cfg.ForwardTimeout, InternalURL: w.cfg.InternalURL,
		Tenants: w.stores.tenants, Client: w.test.ForwardClient, Logger: w.log,
	})
	if err != nil {
		return err
	}
	var hooks []string
	if opts.Listener == nil {
		opts.Listener, hooks = fwd, append(hooks, "lifecycle events")
	}
	if opts.MigrationListener == nil {
		opts.MigrationListener, hooks = fwd, append(hooks, "transfer events")
	}
	if opts.Importer == nil {
		opts.Importer, hooks = fwd, append(hooks, "uploads")
	}
	w.log.Info("forwarding to the backend", slog.String("url", withoutQuery(w.cfg.ForwardURL)), slog.Any("hooks", hooks))
	return nil
}

// Run processes tasks until ctx ends, then stops taking tasks and waits up to
// SHUTDOWN_TIMEOUT for running ones; asynq puts unfinished tasks back in their
// queue, so another worker runs them.
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
	if err := w.server.Start(w.handlers.Mux()); err != nil {
		stopMetrics()
		return fmt.Errorf("start asynq server: %w", err)
	}
	if err := w.scheduler.Start(); err != nil {
		w.server.Shutdown()
		stopMetrics()
		return fmt.Errorf("start asynq scheduler: %w", err)
	}
	dispatchCtx, stopDispatch := context.WithCancel(context.Background())
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		(&outbox.Dispatcher{Store: w.events, Enqueue: w.enqueuer.EnqueueEvent, Interval: eventDispatchInterval,
			Batch: 200, Logger: w.log}).Run(dispatchCtx)
	}()
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		tasks.NewOrphans(w.stores.redis, 0, nil, w.log).Run(dispatchCtx, tasks.OrphanSweepInterval)
	}()
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		tasks.NewQueueStats(w.stores.redis, w.test.Metrics, processID(), nil, w.log).Run(dispatchCtx, tasks.QueueStatsInterval)
	}()
	staleDone := make(chan struct{})
	go func() { defer close(staleDone); w.staleSweep(dispatchCtx) }()
	w.log.Info("worker started", slog.Int("concurrency", w.cfg.WorkerConcurrency))
	<-ctx.Done()
	w.log.Info("worker shutting down")
	stopDispatch()
	<-dispatched
	<-swept
	<-collected
	<-staleDone
	w.scheduler.Shutdown()
	w.server.Shutdown()
	stopMetrics()
	w.log.Info("worker stopped")
	return nil
}

func (w *Worker) serveMetrics() (*http.Server, error) {
	ln := w.test.MetricsListener
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
	mux.Handle("/metrics", w.test.Metrics.Handler())
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusOK) })
	srv := newHTTPServer(mux, 10*time.Second, w.log)
	if d := w.test.IdleTimeout; d > 0 {
		srv.IdleTimeout = d
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("worker metrics server stopped", slog.String("error", err.Error()))
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

// withoutQuery is a URL without its query and fragment, which may hold a
// credential of the backend's, for logs.
func withoutQuery(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// processID names this worker process among the fleet: host, pid and a random
// suffix.
func processID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%x", host, os.Getpid(), b)
}
