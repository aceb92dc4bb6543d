package handlers_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/replay"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/tasks"
)

const appKey = "com.example.relay-test"

// harness is a receiver wired to a real Postgres database, a real Redis DB and a
// fake Atlassian, served on loopback.
type harness struct {
	t       testing.TB
	atl     *atlassiantest.Atlassian
	baseURL string
	// internalURL serves the internal listener (/metrics, /monitoring, /v1).
	internalURL string
	pool        *pgxpool.Pool
	store       *tenant.Store
	rdb         *redis.Client
	inspector   *asynq.Inspector
	metrics     *metrics.Metrics
	logs        *testenv.LogBuffer
	srv         *httptest.Server

	pgProxy, redisProxy *testenv.Proxy

	// forge signs Forge Invocation Tokens when harnessOpts.forge is set.
	forge *forgetest.Issuer
}

type harnessOpts struct {
	databaseURL string // default: a fresh test database
	redisAddr   string // default: a claimed test Redis DB
	keyServer   string // default: the fake's key server
	adminToken  string
	monitoring  http.Handler
	// internalToken enables the /v1 API with this bearer token, and data
	// serves upload data to it.
	internalToken string
	data          handlers.DataOpener
	// keyFetchBurst, when positive, is the key server's fetch budget (the
	// bucket barely refills during a test).
	keyFetchBurst int
	// productHosts replaces the default CONNECT_PRODUCT_HOSTS.
	productHosts []string
	// failLifecycleEnqueues, when set, fails that many of the next
	// lifecycle enqueues (a queue that breaks after the change committed).
	failLifecycleEnqueues *atomic.Int32
	// viaProxies puts a freezable TCP proxy in front of Postgres and Redis
	// (h.pgProxy, h.redisProxy), for tests where a dependency hangs.
	viaProxies bool
	descriptor func(map[string]any)
	// descriptorFile is CONNECT_DESCRIPTOR_FILE.
	descriptorFile string
	// trustedProxies is TRUSTED_PROXIES.
	trustedProxies []netip.Prefix
	// forge enables the /forge/* routes for an app of a test issuer
	// (h.forge) whose JWKS a loopback server serves; forgeModules binds
	// /forge/lifecycle to module keys.
	forge        bool
	forgeModules []string
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &harness{t: t, atl: atlassiantest.New(t), logs: &testenv.LogBuffer{}, metrics: metrics.New()}

	dbURL := o.databaseURL
	migrate := dbURL == ""
	if migrate {
		dbURL = testenv.PostgresURL(t)
	}
	if o.viaProxies {
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		h.pgProxy = testenv.NewProxy(t, u.Host)
		u.Host = h.pgProxy.Addr()
		dbURL = u.String()
	}
	pool, err := schema.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if migrate {
		if err := schema.Migrate(ctx, pool); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	h.pool = pool
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := tenant.NewSecretBox(key)
	if err != nil {
		t.Fatalf("secret box: %v", err)
	}
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.store = tenant.NewStore(pool, box, logger)

	var rdbOpts *redis.Options
	if o.redisAddr != "" {
		rdbOpts = &redis.Options{Addr: o.redisAddr}
	} else {
		rdbOpts = &redis.Options{Addr: testenv.RedisAddr(), DB: testenv.Redis(t)}
	}
	if o.viaProxies {
		h.redisProxy = testenv.NewProxy(t, rdbOpts.Addr)
		rdbOpts.Addr = h.redisProxy.Addr()
	}
	rdbOpts.ContextTimeoutEnabled = true
	rdbOpts.DialTimeout, rdbOpts.ReadTimeout, rdbOpts.WriteTimeout = 300*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	rdbOpts.MaxRetries = 1
	h.rdb = redis.NewClient(rdbOpts)
	t.Cleanup(func() { _ = h.rdb.Close() })
	aq := asynq.NewClientFromRedisClient(h.rdb)
	h.inspector = asynq.NewInspectorFromRedisClient(h.rdb)

	h.srv = httptest.NewUnstartedServer(nil)
	h.baseURL = "http://" + h.srv.Listener.Addr().String()
	keyBase := o.keyServer
	if keyBase == "" {
		keyBase = h.atl.KeyServer.URL
	}
	cfg := config.Config{
		AppKey: appKey, AppName: "Relay test", BaseURL: h.baseURL,
		AllowedBaseURLs: []string{"https://old-app.example.com"},
		ProductHosts:    config.DefaultProductHosts, Scopes: []string{"READ", "WRITE"},
		AdminToken: o.adminToken, JWTLeeway: 30 * time.Second, InternalToken: o.internalToken,
		TrustedProxies: o.trustedProxies, DescriptorFile: o.descriptorFile,
	}
	if o.productHosts != nil {
		cfg.ProductHosts = o.productHosts
	}
	var forgeDeps handlers.ForgeDeps
	if o.forge {
		h.forge, err = forgetest.NewIssuer(forgetest.NewUUID())
		if err != nil {
			t.Fatal(err)
		}
		jwks := httptest.NewServer(h.forge.Handler())
		t.Cleanup(jwks.Close)
		cfg.ForgeAppID, cfg.ForgeJWKSURL = h.forge.AppID(), jwks.URL
		cfg.ForgeEnvironments, cfg.ForgeAPIHosts = []string{"PRODUCTION"}, []string{"api.atlassian.com"}
		cfg.ForgeLifecycleModules = o.forgeModules
		v, err := forge.NewVerifier(forge.Config{AppID: cfg.ForgeAppID, JWKSURL: jwks.URL, AllowInsecureJWKS: true,
			Environments: cfg.ForgeEnvironments, APIHosts: cfg.ForgeAPIHosts, MinRefresh: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		forgeDeps = handlers.ForgeDeps{Verifier: v, Store: h.store}
	}
	hosts, err := connect.NewHostPolicy(cfg.ProductHosts)
	if err != nil {
		t.Fatal(err)
	}
	install, err := connect.NewInstallVerifier(connect.InstallConfig{
		AppBaseURL: cfg.BaseURL, AllowedBaseURLs: cfg.AllowedBaseURLs, Hosts: hosts,
		Keys: connect.NewKeyServer(keyServerConfig(keyBase, o.keyFetchBurst)),
	})
	if err != nil {
		t.Fatal(err)
	}
	cache := tenant.NewSecretCache(h.store, time.Minute)
	requests, err := connect.NewHS256Verifier(connect.HS256Config{AppBaseURLs: cfg.AppBaseURLs(), Secrets: cache})
	if err != nil {
		t.Fatal(err)
	}
	var queue handlers.Queue = tasks.NewEnqueuer(aq)
	if o.failLifecycleEnqueues != nil {
		queue = failingQueue{Queue: queue, fail: o.failLifecycleEnqueues}
	}
	srv, err := handlers.New(handlers.Deps{
		Config: cfg, Install: install, Requests: requests, Tenants: h.store,
		Secrets: tenant.NewInvalidations(cache, h.rdb, tenant.InvalidationChannel(rdbOpts.DB, appKey), logger),
		Replay:  replay.New(h.rdb),
		Queue:   queue, Metrics: h.metrics, Logger: logger, Monitoring: o.monitoring, Descriptor: o.descriptor,
		Forge: forgeDeps,
		API: handlers.APIDeps{Tenants: h.store, Targets: h.store, Hosts: hosts, Uploads: migration.NewReader(pool),
			Data: o.data, Results: tasks.NewEnqueuer(aq)},
		Ready: []handlers.Check{
			{Name: "postgres", Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
			{Name: "redis", Check: func(ctx context.Context) error { return h.rdb.Ping(ctx).Err() }},
		},
	})
	if err != nil {
		t.Fatalf("handlers.New: %v", err)
	}
	h.srv.Config.Handler = srv
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	internal := httptest.NewServer(srv.Internal())
	t.Cleanup(internal.Close)
	h.internalURL = internal.URL
	return h
}

func keyServerConfig(base string, burst int) connect.KeyServerConfig {
	cfg := connect.KeyServerConfig{BaseURL: base, Timeout: 500 * time.Millisecond}
	if burst > 0 {
		cfg.FetchRate, cfg.FetchBurst = 0.001, burst
	}
	return cfg
}

// do sends req and returns status and body.
func (h *harness) do(req *http.Request) (int, string) {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// install sends a genuinely signed installed for clientKey.
func (h *harness) install(clientKey, baseURL, secret string) (int, string) {
	h.t.Helper()
	body := atlassiantest.InstallBody(clientKey, baseURL, secret, appKey)
	return h.do(h.atl.Request(h.t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: clientKey}))
}

// installAt sends a signed installed issued at iat. A later installed of the
// same tenant within the same second needs a later iat: the same token again
// is a copy (replay) of the first, bound to its body.
func (h *harness) installAt(clientKey, baseURL, secret string, iat time.Time) (int, string) {
	h.t.Helper()
	body := atlassiantest.InstallBody(clientKey, baseURL, secret, appKey)
	return h.do(h.atl.Request(h.t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: clientKey, IssuedAt: iat}))
}

// hs256 sends an HS256-signed lifecycle or webhook POST.
func (h *harness) hs256(path, clientKey, secret string, body any) (int, string) {
	h.t.Helper()
	return h.do(h.atl.Request(h.t, h.baseURL, path, body, atlassiantest.Token{Alg: "HS256", Issuer: clientKey, Secret: []byte(secret)}))
}

func lifecycleBody(clientKey, baseURL, event string) map[string]any {
	return map[string]any{"key": appKey, "clientKey": clientKey, "baseUrl": baseURL, "eventType": event}
}

// tasksIn lists the pending tasks of a queue.
func (h *harness) tasksIn(queue string) []*asynq.TaskInfo {
	h.t.Helper()
	list, err := h.inspector.ListPendingTasks(queue, asynq.PageSize(1000))
	if err != nil && !isQueueNotFound(err) {
		h.t.Fatalf("list %s tasks: %v", queue, err)
	}
	return list
}

func isQueueNotFound(err error) bool {
	return err != nil && (errors.Is(err, asynq.ErrQueueNotFound) || strings.Contains(err.Error(), "not found") ||
		strings.Contains(err.Error(), "does not exist"))
}

// dropPending deletes the pending tasks of queue.
func (h *harness) dropPending(queue string) {
	h.t.Helper()
	if _, err := h.inspector.DeleteAllPendingTasks(queue); err != nil && !isQueueNotFound(err) {
		h.t.Fatalf("drop %s tasks: %v", queue, err)
	}
}

// historyCount is the number of history rows of a tenant.
func (h *harness) historyCount(clientKey string) int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM tenant_events WHERE client_key = $1`, clientKey).Scan(&n); err != nil {
		h.t.Fatalf("count history rows of %s: %v", clientKey, err)
	}
	return n
}

// tenantRow is the stored row of a tenant as JSON, for byte-for-byte comparisons.
func (h *harness) tenantRow(clientKey string) string {
	h.t.Helper()
	var s string
	err := h.pool.QueryRow(context.Background(), `SELECT row_to_json(t)::text FROM tenants t WHERE client_key = $1`, clientKey).Scan(&s)
	if err != nil {
		h.t.Fatalf("read tenant row %s: %v", clientKey, err)
	}
	return s
}

func decodePayload(t *testing.T, ti *asynq.TaskInfo) tasks.TenantPayload {
	t.Helper()
	var p tasks.TenantPayload
	if err := json.Unmarshal(ti.Payload, &p); err != nil {
		t.Fatalf("decode payload %s: %v", ti.Payload, err)
	}
	return p
}

// seedTenant stores a tenant directly (for tests whose Redis is down, where an
// installed callback cannot complete).
func (h *harness) seedTenant(clientKey, baseURL, secret string) {
	h.t.Helper()
	b, _ := json.Marshal(atlassiantest.InstallBody(clientKey, baseURL, secret, appKey))
	p, err := tenant.ParseInstallPayload(b)
	if err != nil {
		h.t.Fatalf("parse install payload: %v", err)
	}
	if _, err := h.store.Install(context.Background(), p, tenant.ReceivedAt(time.Now(), time.Now())); err != nil {
		h.t.Fatalf("seed tenant: %v", err)
	}
}

// failingQueue fails lifecycle enqueues while fail is positive, counting it
// down.
type failingQueue struct {
	handlers.Queue
	fail *atomic.Int32
}

func (q failingQueue) Lifecycle(ctx context.Context, typ, clientKey string, eventID int64) (bool, error) {
	if q.fail.Add(-1) >= 0 {
		return false, errors.New("injected: the task queue failed")
	}
	return q.Queue.Lifecycle(ctx, typ, clientKey, eventID)
}
