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

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/replay"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/tasks"
)

// keyFetchTimeout bounds one fetch of an install public key. Atlassian's CDN
// answers in tens of milliseconds; a slower answer is treated as unavailable (503)
// so Atlassian retries rather than the install hanging. Primary and fallback CDN
// together stay within the handlers' one-second request budget.
const keyFetchTimeout = 400 * time.Millisecond

// secretCacheTTL is how long the receiver trusts a decrypted secret in memory.
// An install on any replica announces the new secret on Redis and every
// replica drops its entry at once (tenant.Invalidations); the TTL is the
// backstop for an announcement that is lost. A signature that fails with a
// cached secret reloads it once before answering 401.
const secretCacheTTL = 60 * time.Second

// ReceiverOptions customise the receiver; every field is optional.
type ReceiverOptions struct {
	// Logger defaults to JSON on standard error at LOG_LEVEL.
	Logger *slog.Logger
	// Descriptor may add modules and other keys to the served descriptor. The
	// keys the service owns (key, baseUrl, authentication, lifecycle,
	// apiMigrations.signed-install, cloudAppMigration) are set after it runs.
	Descriptor func(map[string]any)
	// Test holds settings for tests; production leaves it zero.
	Test ReceiverTest
}

// ReceiverTest holds the receiver's settings for tests.
type ReceiverTest struct {
	// Listener, when set, is served instead of listening on LISTEN_ADDR.
	Listener net.Listener
	// InternalListener, when set, is served instead of listening on
	// INTERNAL_LISTEN_ADDR.
	InternalListener net.Listener
	// Ready, when set, is closed once the receiver serves requests.
	Ready chan<- struct{}
	// Metrics, when set, receives the receiver's counters instead of a fresh set.
	Metrics *metrics.Metrics
}

// Receiver is an assembled receiver: call Run to serve; it returns after a
// graceful shutdown when its context ends.
type Receiver struct {
	cfg      config.Config
	log      *slog.Logger
	test     ReceiverTest
	stores   *stores
	queue    *asynq.Client
	monitor  *asynqmon.HTTPHandler
	secrets  *tenant.Invalidations
	handler  http.Handler
	internal http.Handler
}

// NewReceiver connects to Postgres (applying migrations) and Redis and builds the
// HTTP application.
func NewReceiver(ctx context.Context, cfg config.Config, opts ReceiverOptions) (*Receiver, error) {
	st, err := openStores(ctx, cfg, &opts.Logger, &opts.Test.Metrics)
	if err != nil {
		return nil, err
	}
	r := &Receiver{cfg: cfg, log: opts.Logger, test: opts.Test, stores: st}
	if err := r.build(opts.Descriptor); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *Receiver) build(descriptor func(map[string]any)) error {
	cfg, st := r.cfg, r.stores
	keys := connect.NewKeyServer(connect.KeyServerConfig{BaseURL: cfg.KeysCDNURL, Timeout: keyFetchTimeout})
	install, err := connect.NewInstallVerifier(connect.InstallConfig{
		AppBaseURL: cfg.BaseURL, AllowedBaseURLs: cfg.AllowedBaseURLs, Hosts: st.hosts, Keys: keys, Leeway: cfg.JWTLeeway,
	})
	if err != nil {
		return fmt.Errorf("install verifier: %w", err)
	}
	secrets := tenant.NewSecretCache(st.tenants, secretCacheTTL)
	db, err := tasks.RedisDB(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	r.secrets = tenant.NewInvalidations(secrets, st.redis, tenant.InvalidationChannel(db, cfg.AppKey), r.log)
	requests, err := connect.NewHS256Verifier(connect.HS256Config{
		AppBaseURLs: cfg.AppBaseURLs(), Secrets: secrets, Leeway: cfg.JWTLeeway,
	})
	if err != nil {
		return fmt.Errorf("request verifier: %w", err)
	}
	r.queue = asynq.NewClientFromRedisClient(st.redis)
	var monitoring http.Handler
	if cfg.AdminToken != "" {
		connOpt, err := tasks.RedisConnOpt(cfg.RedisURL)
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
		r.log.Info("ADMIN_TOKEN is not set: /monitoring is disabled")
	}
	pc, err := product.New(product.Config{
		AppKey: cfg.AppKey, UserAgent: "connectrelay/" + connectrelay.Version + " " + cfg.AppKey,
		Hosts: st.hosts, Logger: r.log,
	}, st.tenants)
	if err != nil {
		return fmt.Errorf("product client: %w", err)
	}
	queue := tasks.NewEnqueuer(r.queue)
	forgeAPI, err := forgeClient(cfg, st.tenants, nil, 0, r.log, r.test.Metrics)
	if err != nil {
		return err
	}
	var forgeDeps handlers.ForgeDeps
	if cfg.ForgeAppID != "" {
		v, err := forge.NewVerifier(forge.Config{
			AppID: cfg.ForgeAppID, JWKSURL: cfg.ForgeJWKSURL, AllowInsecureJWKS: cfg.ForgeInsecure(),
			Environments: cfg.ForgeEnvironments, APIHosts: cfg.ForgeAPIHosts, Logger: r.log,
		})
		if err != nil {
			return fmt.Errorf("forge verifier: %w", err)
		}
		// Warm the key set so the first delivery does not wait for it; a
		// failure is not fatal (the verifier fetches on demand, 503 until then).
		wctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := v.Warm(wctx); err != nil {
			r.log.Warn("Forge JWKS not fetched at start-up; Forge deliveries answer 503 until it is", slog.String("error", err.Error()))
		}
		cancel()
		forgeDeps = handlers.ForgeDeps{Verifier: v, Store: st.tenants}
		for _, m := range []struct {
			env, route string
			keys       []string
		}{
			{"FORGE_LIFECYCLE_MODULE_KEYS", handlers.PathForgeLifecycle, cfg.ForgeLifecycleModules},
			{"FORGE_PREUNINSTALL_MODULE_KEYS", handlers.PathForgePreUninstall, cfg.ForgePreUninstallModules},
			{"FORGE_MIGRATION_MODULE_KEYS", handlers.PathForgeMigration, cfg.ForgeMigrationModules},
		} {
			if len(m.keys) == 0 {
				r.log.Warn("Forge module keys not set: the route accepts a token of any module of the app; name the manifest's module keys",
					slog.String("variable", m.env), slog.String("route", m.route))
			}
		}
	}
	srv, err := handlers.New(handlers.Deps{
		Config:   cfg,
		Install:  install,
		Requests: requests,
		Tenants:  st.tenants,
		Secrets:  r.secrets,
		Replay:   replay.New(st.redis),
		Queue:    queue,
		Ready: []handlers.Check{
			{Name: "postgres", Check: func(ctx context.Context) error { return st.pool.Ping(ctx) }},
			{Name: "redis", Check: func(ctx context.Context) error { return st.redis.Ping(ctx).Err() }},
		},
		Metrics:    r.test.Metrics,
		Logger:     r.log,
		Monitoring: monitoring,
		API: handlers.APIDeps{
			Tenants: st.tenants, Targets: st.tenants, Hosts: st.hosts,
			Uploads: migration.NewReader(st.pool), Results: queue,
			Data: migration.Router{Connect: product.NewAMP(pc, nil, product.WithLogger(r.log)), Forge: forgeAPI},
		},
		Descriptor: descriptor,
		Forge:      forgeDeps,
	})
	if err != nil {
		return err
	}
	r.handler, r.internal = srv, srv.Internal()
	return nil
}

// Handler is the receiver's HTTP handler, for embedding it in another server.
// Secrets rotated through other replicas are dropped from its cache by Run's
// subscription; without Run they expire after the cache TTL (60 s).
func (r *Receiver) Handler() http.Handler { return r.handler }

// Run serves the public listener (LISTEN_ADDR) and the internal one
// (INTERNAL_LISTEN_ADDR, unless off) until ctx ends, then stops accepting, lets
// in-flight requests finish within SHUTDOWN_TIMEOUT, and closes the pools.
func (r *Receiver) Run(ctx context.Context) error {
	defer r.close()
	// Subscribe before serving: a secret rotated on another replica must never
	// verify here from the cache.
	sctx, stop := context.WithCancel(ctx)
	defer func() { stop(); <-r.secrets.Done() }()
	if err := r.secrets.Start(sctx); err != nil {
		return fmt.Errorf("secret invalidations: %w", err)
	}
	// Callbacks answer in milliseconds; the internal listener streams uploads
	// of any size and serves the monitoring UI's 1 MB script.
	servers := []*served{{name: "public", addr: r.cfg.ListenAddr, ln: r.test.Listener, handler: r.handler, write: time.Minute}}
	if r.cfg.InternalListenAddr != "" || r.test.InternalListener != nil {
		servers = append(servers, &served{name: "internal", addr: r.cfg.InternalListenAddr, ln: r.test.InternalListener, handler: r.internal})
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		if err := s.listen(); err != nil {
			for _, o := range servers {
				o.closeListener()
			}
			return err
		}
	}
	for _, s := range servers {
		s.srv = newHTTPServer(s.handler, s.write, r.log)
		go func() { errc <- s.srv.Serve(s.ln) }()
		r.log.Info("receiver listening", slog.String("listener", s.name), slog.String("addr", s.ln.Addr().String()))
	}
	if r.test.Ready != nil {
		close(r.test.Ready)
	}
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	r.log.Info("receiver shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("graceful shutdown of the %s listener: %w", s.name, err))
		}
	}
	if serveErr != nil {
		return errors.Join(append(errs, serveErr)...)
	}
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serve: %w", err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	r.log.Info("receiver stopped")
	return nil
}

// served is one listener of the receiver.
type served struct {
	name, addr string
	ln         net.Listener
	handler    http.Handler
	write      time.Duration
	srv        *http.Server
}

func (s *served) listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on the %s address %s: %w", s.name, s.addr, err)
	}
	s.ln = ln
	return nil
}

func (s *served) closeListener() {
	if s.ln != nil {
		_ = s.ln.Close()
	}
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
