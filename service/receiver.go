package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/tasks"
)

// KeyFetchTimeout bounds one fetch of an install public key. Atlassian's CDN
// answers in tens of milliseconds; a slower answer is treated as unavailable (503)
// so Atlassian retries rather than the install hanging. Primary and fallback CDN
// together stay within the handlers' one-second request budget.
const KeyFetchTimeout = 400 * time.Millisecond

// SecretCacheTTL is how long the receiver trusts a decrypted secret in memory. A
// rotation on another replica is caught sooner: a signature that fails with a
// cached secret reloads it once before answering 401.
const SecretCacheTTL = 5 * time.Minute

// ReceiverOptions customise the receiver.
type ReceiverOptions struct {
	// Logger defaults to DefaultLogger(cfg).
	Logger *slog.Logger
	// Descriptor may add modules and other keys to the served descriptor.
	Descriptor func(map[string]any)
	// Listener, when set, is served instead of listening on cfg.ListenAddr
	// (tests pass a loopback listener on a free port).
	Listener net.Listener
	// Metrics defaults to a fresh metrics.New().
	Metrics *metrics.Metrics
	// Ready, when set, is closed once the receiver serves requests.
	Ready chan<- struct{}
}

// Receiver is an assembled receiver: call Run to serve, it returns after a
// graceful shutdown when ctx ends.
type Receiver struct {
	cfg     config.Config
	opts    ReceiverOptions
	stores  *stores
	queue   *asynq.Client
	monitor *asynqmon.HTTPHandler
	handler http.Handler
}

// NewReceiver connects to Postgres (applying migrations) and Redis and builds the
// HTTP application.
func NewReceiver(ctx context.Context, cfg config.Config, opts ReceiverOptions) (*Receiver, error) {
	st, hosts, err := prepare(ctx, cfg, &opts.Logger, &opts.Metrics)
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, opts: opts, stores: st}
	if err := r.build(hosts); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *Receiver) build(hosts *connect.HostPolicy) error {
	cfg, log := r.cfg, r.opts.Logger
	keys := connect.NewKeyServer(connect.KeyServerConfig{BaseURL: cfg.KeysCDNURL, Timeout: KeyFetchTimeout})
	install, err := connect.NewInstallVerifier(connect.InstallConfig{
		AppBaseURL: cfg.BaseURL, AllowedBaseURLs: cfg.AllowedBaseURLs, Hosts: hosts, Keys: keys, Leeway: cfg.JWTLeeway,
	})
	if err != nil {
		return fmt.Errorf("install verifier: %w", err)
	}
	cache := tenant.NewSecretCache(r.stores.tenants, SecretCacheTTL)
	requests, err := connect.NewHS256Verifier(connect.HS256Config{
		AppBaseURLs: cfg.AppBaseURLs(), Secrets: handlers.Secrets(cache), Leeway: cfg.JWTLeeway,
	})
	if err != nil {
		return fmt.Errorf("request verifier: %w", err)
	}
	r.queue = asynq.NewClientFromRedisClient(r.stores.redis)
	var monitoring http.Handler
	if cfg.AdminToken != "" {
		connOpt, err := asynq.ParseRedisURI(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		r.monitor = asynqmon.New(asynqmon.Options{
			RootPath:         handlers.PathMonitoring,
			RedisConnOpt:     connOpt,
			PayloadFormatter: asynqmon.PayloadFormatterFunc(tasks.RedactPayload),
			ResultFormatter:  asynqmon.ResultFormatterFunc(tasks.RedactPayload),
			ReadOnly:         cfg.MonitoringReadOnly,
		})
		monitoring = r.monitor
	} else {
		log.Info("ADMIN_TOKEN is not set: /monitoring is disabled")
	}
	pool, rdb := r.stores.pool, r.stores.redis
	srv, err := handlers.New(handlers.Deps{
		Config:   cfg,
		Install:  install,
		Requests: requests,
		Tenants:  r.stores.tenants,
		Secrets:  cache,
		Queue:    tasks.NewEnqueuer(r.queue),
		Ready: []handlers.Check{
			{Name: "postgres", Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
			{Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		},
		Metrics:    r.opts.Metrics,
		Logger:     log,
		Monitoring: monitoring,
		Descriptor: r.opts.Descriptor,
	})
	if err != nil {
		return err
	}
	r.handler = srv
	return nil
}

// Handler is the receiver's HTTP handler (for tests and for embedding).
func (r *Receiver) Handler() http.Handler { return r.handler }

// Run serves until ctx ends, then stops accepting, lets in-flight requests finish
// within cfg.ShutdownTimeout, and closes the pools.
func (r *Receiver) Run(ctx context.Context) error {
	defer r.close()
	srv := &http.Server{
		Addr:              r.cfg.ListenAddr,
		Handler:           r.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// The monitoring UI serves a 1 MB script; callbacks answer in milliseconds.
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(r.opts.Logger.Handler(), slog.LevelWarn),
	}
	ln := r.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", r.cfg.ListenAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", r.cfg.ListenAddr, err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	r.opts.Logger.Info("receiver listening", slog.String("addr", ln.Addr().String()), slog.String("base_url", r.cfg.BaseURL))
	if r.opts.Ready != nil {
		close(r.opts.Ready)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	r.opts.Logger.Info("receiver shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	r.opts.Logger.Info("receiver stopped")
	return nil
}

func (r *Receiver) close() {
	if r.monitor != nil {
		_ = r.monitor.Close()
	}
	if r.queue != nil {
		_ = r.queue.Close()
	}
	r.stores.close()
}
