package service_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/product/producttest"
	"github.com/connectrelay/connectrelay/service"
	"github.com/connectrelay/connectrelay/tasks"
)

const appKey = "com.example.relay-e2e"

// e2e runs a real receiver and real workers in-process against a fresh Postgres
// database and a claimed Redis DB; Atlassian and the product site are fakes on
// loopback that verify everything we send them.
type e2e struct {
	t         testing.TB
	cfg       config.Config
	atl       *atlassiantest.Atlassian
	logs      *testenv.LogBuffer
	pool      *pgxpool.Pool
	store     *tenant.Store
	inspector *asynq.Inspector
	metrics   *metrics.Metrics
	// internalURL is the receiver's internal listener.
	internalURL string
}

func newE2E(t testing.TB, adminToken string) *e2e {
	t.Helper()
	return newE2EWith(t, adminToken, func(*config.Config) {})
}

// newE2EWith is newE2E with a chance to change the configuration first.
func newE2EWith(t testing.TB, adminToken string, edit func(*config.Config)) *e2e {
	t.Helper()
	e := &e2e{t: t, atl: atlassiantest.New(t), logs: &testenv.LogBuffer{}, metrics: metrics.New()}
	t.Cleanup(func() {
		// A failed end-to-end test shows what the processes logged last.
		if t.Failed() {
			lines := e.logs.Lines()
			t.Logf("last %d log lines:\n%s", min(len(lines), 150), strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	})
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	internal, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.internalURL = "http://" + internal.Addr().String()
	e.cfg = config.Config{
		ListenAddr:          ln.Addr().String(),
		RedisURL:            testenv.RedisURL(t),
		DatabaseURL:         testenv.PostgresURL(t),
		AppKey:              appKey,
		AppName:             "Relay e2e",
		BaseURL:             "http://" + ln.Addr().String(),
		KeysCDNURL:          e.atl.KeyServer.URL,
		ProductHosts:        []string{"127.0.0.1"},
		Scopes:              []string{"READ"},
		SecretKey:           key,
		JWTLeeway:           30 * time.Second,
		MigrationFinalLabel: "final",
		AdminToken:          adminToken,
		WorkerConcurrency:   4,
		ShutdownTimeout:     time.Second,
		LogLevel:            "debug",
		InternalURL:         e.internalURL,
	}
	edit(&e.cfg)
	e.runReceiver("receiver", service.ReceiverTest{Listener: ln, InternalListener: internal, Metrics: e.metrics})

	pool, err := pgxpool.New(context.Background(), e.cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	box, _ := tenant.NewSecretBox(key)
	e.store = tenant.NewStore(pool, box, e.logger("test"))
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	e.inspector = asynq.NewInspectorFromRedisClient(rdb)
	return e
}

func (e *e2e) logger(component string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", component)
}

// startWorker runs a worker until the returned stop function is called.
func (e *e2e) startWorker(opts service.WorkerOptions) (stop func()) {
	e.t.Helper()
	if opts.Logger == nil {
		opts.Logger = e.logger("worker")
	}
	if opts.Test.Metrics == nil {
		opts.Test.Metrics = metrics.New()
	}
	if opts.Test.RetryDelay == 0 {
		opts.Test.RetryDelay = time.Second
	}
	if opts.Test.ProductAttempts == 0 {
		opts.Test.ProductAttempts = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := service.NewWorker(ctx, e.cfg, opts)
	if err != nil {
		cancel()
		e.t.Fatalf("NewWorker: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("worker Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// startReceiver runs one more receiver on the same configuration, on its own
// loopback listener, until the test ends, and returns its base URL.
func (e *e2e) startReceiver(component string) string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.runReceiver(component, service.ReceiverTest{Listener: ln})
	return "http://" + ln.Addr().String()
}

// runReceiver runs a receiver on e.cfg with test options opts until the test
// ends, and returns once it is ready.
func (e *e2e) runReceiver(component string, opts service.ReceiverTest) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	opts.Ready = ready
	r, err := service.NewReceiver(ctx, e.cfg, service.ReceiverOptions{Logger: e.logger(component), Test: opts})
	if err != nil {
		cancel()
		e.t.Fatalf("NewReceiver: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("%s Run: %v", component, err)
		}
	})
	<-ready
}

// waitSettledSuccess waits until transferID is succeeded in the database and
// the product heard a SUCCESS progress report.
func (e *e2e) waitSettledSuccess(transferID string, amp *ampSite, within time.Duration) {
	e.t.Helper()
	eventually(e.t, within, "transfer settled SUCCESS", func() bool {
		var state string
		_ = e.pool.QueryRow(context.Background(), `SELECT state FROM migration_transfers WHERE transfer_id = $1`, transferID).Scan(&state)
		return state == "succeeded"
	})
	eventually(e.t, 5*time.Second, "SUCCESS reported", func() bool {
		for _, s := range amp.statuses() {
			if strings.HasPrefix(s, "SUCCESS") {
				return true
			}
		}
		return false
	})
}

func (e *e2e) do(req *http.Request) int {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		e.t.Logf("%s %s -> %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

func (e *e2e) install(clientKey string, site *producttest.Server, secret string) {
	e.t.Helper()
	e.installAt(clientKey, site, secret, time.Time{})
}

// installAt is install with a token issued at iat (zero: now). A second
// installed of a tenant within one second needs a later iat: the same token
// again is a copy of the first, bound to its body.
func (e *e2e) installAt(clientKey string, site *producttest.Server, secret string, iat time.Time) {
	e.t.Helper()
	body := atlassiantest.InstallBody(clientKey, site.BaseURL(), secret, appKey)
	if code := e.do(e.atl.Request(e.t, e.cfg.BaseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: clientKey, IssuedAt: iat})); code != http.StatusNoContent {
		e.t.Fatalf("installed = %d, want 204", code)
	}
}

func (e *e2e) hs256(path, clientKey, secret string, body any) int {
	e.t.Helper()
	return e.do(e.atl.Request(e.t, e.cfg.BaseURL, path, body, atlassiantest.Token{Alg: "HS256", Issuer: clientKey, Secret: []byte(secret)}))
}

// waitLicense waits until the worker has recorded state as clientKey's license.
func (e *e2e) waitLicense(clientKey string, state connectrelay.LicenseState, within time.Duration, what string) {
	e.t.Helper()
	eventually(e.t, within, what, func() bool {
		tn, err := e.store.Get(context.Background(), clientKey)
		return err == nil && tn.LicenseState == state
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(within, 25*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// poll calls cond every interval until it holds (true) or within has passed
// (false).
func poll(within, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(interval)
	}
	return false
}

// site is a stateful fake product: it answers the License API and keeps the
// registered migration webhooks.
type site struct {
	mu        sync.Mutex
	endpoints []string
	puts      [][]string
	addonCode int
	addonBody string
	failFirst int // answer this many addon calls 503 first
	addonHits int
}

func newSite() *site {
	return &site{addonCode: 200, addonBody: `{"key":"` + appKey + `","version":"1.0.0","state":"ENABLED","license":{"active":true,"type":"commercial"}}`}
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/rest/atlassian-connect/1/addons/"+appKey && r.Method == http.MethodGet:
		s.addonHits++
		if s.addonHits <= s.failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(s.addonCode)
		_, _ = io.WriteString(w, s.addonBody)
	case r.URL.Path == "/rest/atlassian-connect/1/migration/webhook" && r.Method == http.MethodGet:
		_ = json.NewEncoder(w).Encode(map[string]any{"endpoints": s.endpointsOrEmpty()})
	case r.URL.Path == "/rest/atlassian-connect/1/migration/webhook" && r.Method == http.MethodPut:
		var body struct {
			Endpoints []string `json:"endpoints"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		s.endpoints = body.Endpoints
		s.puts = append(s.puts, body.Endpoints)
		_ = json.NewEncoder(w).Encode(body)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (s *site) endpointsOrEmpty() []string {
	if s.endpoints == nil {
		return []string{}
	}
	return s.endpoints
}

func (s *site) putCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.puts)
}

func (s *site) hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addonHits
}

func newProduct(t testing.TB, secret string, h http.Handler) *producttest.Server {
	return producttest.New(t, producttest.Config{AppKey: appKey, Secret: []byte(secret), Handler: h})
}

func TestWorker_InstallChecksTheLicenseWithASignedCallAndRegistersTheWebhook(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-0123456789abcdef0123"
	st := newSite()
	prod := newProduct(t, secret, st)
	e.startWorker(service.WorkerOptions{})
	start := time.Now()
	e.install("ck-1", prod, secret)
	e.waitLicense("ck-1", connectrelay.LicenseActive, 5*time.Second, "license recorded")
	t.Logf("install -> license recorded in %s", time.Since(start))
	reqs := prod.Requests()
	if len(reqs) == 0 || reqs[0].Method != http.MethodGet || reqs[0].Path != "/rest/atlassian-connect/1/addons/"+appKey {
		t.Fatalf("first product call = %+v, want GET addons", reqs)
	}
	if reqs[0].Claims.Issuer != appKey || len(reqs[0].Body) != 0 {
		t.Errorf("addons call: iss=%q body=%q", reqs[0].Claims.Issuer, reqs[0].Body)
	}
	if ua := reqs[0].Header.Get("User-Agent"); !strings.Contains(ua, appKey) {
		t.Errorf("User-Agent %q does not name the app", ua)
	}
	eventually(t, 5*time.Second, "webhook registered at initialization", func() bool { return st.putCount() == 1 })
	if got := st.puts[0]; len(got) != 1 || got[0] != e.cfg.BaseURL+"/migration/events" {
		t.Errorf("registered endpoints = %v", got)
	}
}

func TestWorker_EnabledRegistersTheWebhookOnlyWhenItIsNotRight(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-enabled-0123456789ab"
	st := newSite()
	st.addonCode, st.addonBody = 200, `{"key":"`+appKey+`","state":"ENABLED"}`
	prod := newProduct(t, secret, st)
	// Another app version registered something else before us.
	st.endpoints = []string{"https://old.example.com/migration"}
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	eventually(t, 5*time.Second, "initialization", func() bool {
		tn, err := e.store.Get(context.Background(), "ck-1")
		return err == nil && tn.LicenseState == connectrelay.LicenseUnknown && tn.LicenseCheckedAt != nil && len(tn.WebhookEndpoints) == 1
	})
	for i := range 2 {
		// Two enabled events (a second later: the same token again would be a
		// copy of the first, acknowledged without being applied again).
		tok := atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secret), IssuedAt: time.Now().Add(time.Duration(i) * time.Second)}
		req := e.atl.Request(t, e.cfg.BaseURL, handlers.PathEnabled, map[string]any{"clientKey": "ck-1", "eventType": "enabled"}, tok)
		if code := e.do(req); code != http.StatusNoContent {
			t.Fatalf("enabled %d = %d", i, code)
		}
	}
	eventually(t, 5*time.Second, "enabled tasks done", func() bool {
		info, err := e.inspector.GetQueueInfo("lifecycle")
		return err == nil && info.Pending == 0 && info.Active == 0 && info.Processed >= 3
	})
	if n := st.putCount(); n != 1 {
		t.Errorf("webhook PUTs = %d, want exactly 1 (the replacement of the old endpoint)", n)
	}
	if got := st.endpointsOrEmpty(); len(got) != 1 || got[0] != e.cfg.BaseURL+"/migration/events" {
		t.Errorf("registered endpoints = %v", got)
	}
}

func TestWorker_RenameBeforeInitializationCallsTheNewBaseURL(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-rename-0123456789abc"
	oldSite, newSite_ := newSite(), newSite()
	oldProd, newProd := newProduct(t, secret, oldSite), newProduct(t, secret, newSite_)
	e.install("ck-1", oldProd, secret)
	e.installAt("ck-1", newProd, secret, time.Now().Add(time.Second)) // site rename before any worker ran
	e.startWorker(service.WorkerOptions{})
	eventually(t, 5*time.Second, "both initializations", func() bool { return newSite_.hits() == 2 })
	if n := len(oldProd.Requests()); n != 0 {
		t.Errorf("old baseUrl received %d calls after the rename", n)
	}
}

func TestWorker_Product503TwiceThenSucceedsOnRetry(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-retry-0123456789abcd"
	st := newSite()
	st.failFirst = 2
	prod := newProduct(t, secret, st)
	e.startWorker(service.WorkerOptions{})
	e.install("ck-1", prod, secret)
	e.waitLicense("ck-1", connectrelay.LicenseActive, 15*time.Second, "license recorded after retries")
	if n := st.hits(); n != 3 {
		t.Errorf("addon calls = %d, want 3 (503, 503, 200)", n)
	}
}

func TestWorker_Product401ArchivesTheTaskWithAClearError(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-401-0123456789abcdef"
	st := newSite()
	st.addonCode, st.addonBody = http.StatusUnauthorized, `{"message":"bad jwt"}`
	prod := newProduct(t, secret, st)
	e.startWorker(service.WorkerOptions{})
	e.install("ck-1", prod, secret)
	var archived []*asynq.TaskInfo
	eventually(t, 5*time.Second, "task archived", func() bool {
		archived, _ = e.inspector.ListArchivedTasks("lifecycle")
		return len(archived) == 1
	})
	if msg := strings.ToLower(archived[0].LastErr); !strings.Contains(msg, "unauthorized") || !strings.Contains(msg, "401") {
		t.Errorf("archived error = %q, want it to say unauthorized (401)", archived[0].LastErr)
	}
	if st.hits() != 1 {
		t.Errorf("addon calls = %d, want 1 (a 401 is not retried)", st.hits())
	}
}

// blockingInitializer blocks its first run until its context ends (the worker is
// stopped), then lets later runs complete.
type blockingInitializer struct {
	mu        sync.Mutex
	runs      int
	completed int
	started   chan struct{}
}

func (b *blockingInitializer) InitializeTenant(ctx context.Context, _ *connectrelay.InitRequest) error {
	b.mu.Lock()
	b.runs++
	first := b.runs == 1
	b.mu.Unlock()
	if first {
		close(b.started)
		<-ctx.Done()
		return ctx.Err()
	}
	b.mu.Lock()
	b.completed++
	b.mu.Unlock()
	return nil
}

func TestWorker_StoppedMidTaskRunsItAgainAndCompletesOnce(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-crash-0123456789abcd"
	prod := newProduct(t, secret, newSite())
	init := &blockingInitializer{started: make(chan struct{})}
	stop := e.startWorker(service.WorkerOptions{Initializer: init})
	e.install("ck-1", prod, secret)
	select {
	case <-init.started:
	case <-time.After(5 * time.Second):
		t.Fatal("initializer never started")
	}
	stop() // shutdown: the in-flight task's context is cancelled after ShutdownTimeout
	e.startWorker(service.WorkerOptions{Initializer: init})
	eventually(t, 10*time.Second, "initialization completed by the second worker", func() bool {
		init.mu.Lock()
		defer init.mu.Unlock()
		return init.completed == 1
	})
	eventually(t, 5*time.Second, "task completed", func() bool {
		info, err := e.inspector.GetQueueInfo("lifecycle")
		return err == nil && info.Completed == 1 && info.Pending == 0 && info.Retry == 0 && info.Active == 0
	})
	time.Sleep(300 * time.Millisecond)
	init.mu.Lock()
	defer init.mu.Unlock()
	if init.completed != 1 {
		t.Errorf("initializer completed %d times, want 1", init.completed)
	}
}

func TestMonitoring_ServesTheUIWithTheTokenAndRedactsPayloads(t *testing.T) {
	t.Parallel()
	const token = "admin-token-e2e-0123456789abcdef"
	e := newE2E(t, token)
	// A vendor task carrying a secret-looking field, sitting in a queue.
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	c := asynq.NewClientFromRedisClient(rdb)
	if _, err := c.Enqueue(asynq.NewTask("vendor:thing", []byte(`{"clientKey":"ck-9","sharedSecret":"leaky-secret-value"}`)), asynq.Queue("lifecycle")); err != nil {
		t.Fatal(err)
	}
	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, e.internalURL+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/monitoring", false); code != http.StatusUnauthorized {
		t.Errorf("/monitoring without token = %d, want 401", code)
	}
	if code, _ := get("/monitoring/api/queues", false); code != http.StatusUnauthorized {
		t.Errorf("/monitoring/api/queues without token = %d, want 401", code)
	}
	code, body := get("/monitoring", true)
	if code != http.StatusOK || !strings.Contains(body, "FLAG_ROOT_PATH") {
		t.Errorf("/monitoring with token = %d, want the asynqmon UI", code)
	}
	code, body = get("/monitoring/api/queues/lifecycle/pending_tasks", true)
	if code != http.StatusOK || !strings.Contains(body, "ck-9") {
		t.Fatalf("pending tasks API = %d %s", code, body)
	}
	if strings.Contains(body, "leaky-secret-value") || !strings.Contains(body, "REDACTED") {
		t.Errorf("payload not redacted in the UI API: %s", body)
	}
}

func TestReceiver_MetricsExposeTheSLIAfterInstalls(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	for i := range 3 {
		prod := newProduct(t, "s", newSite())
		e.install(fmt.Sprintf("ck-%d", i), prod, fmt.Sprintf("shared-secret-%d-0123456789abcdef0123", i))
	}
	resp, err := http.Get(e.internalURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `connectrelay_install_callback_sli_total{result="good"} 3`) {
		t.Errorf("/metrics lacks the install SLI counter:\n%s", b)
	}
}

func TestWorker_DailyLicenseSweepRecordsAnEndedSubscription(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-license-0123456789ab"
	st := newSite()
	prod := newProduct(t, secret, st)
	e.startWorker(service.WorkerOptions{})
	e.install("ck-1", prod, secret)
	e.waitLicense("ck-1", connectrelay.LicenseActive, 5*time.Second, "license active")
	// The customer unsubscribes: no lifecycle event, only the License API knows.
	st.mu.Lock()
	st.addonBody = `{"key":"` + appKey + `","state":"ENABLED","license":{"active":false}}`
	st.mu.Unlock()
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	sweep, opts := tasks.LicenseSweepTask()
	for range 2 { // a second scheduler's sweep the same day is a no-op
		if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(sweep, opts...); err != nil && !errors.Is(err, asynq.ErrDuplicateTask) {
			t.Fatal(err)
		}
	}
	e.waitLicense("ck-1", connectrelay.LicenseInactive, 5*time.Second, "license inactive")
	hist, err := e.store.History(context.Background(), "ck-1", 20)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range hist {
		for _, c := range ev.Changes {
			found = found || strings.Contains(c, "active -> inactive")
		}
	}
	if !found {
		t.Errorf("history does not record the license change: %+v", hist)
	}
	// Another worker's scheduler enqueues the sweep later the same day, after the
	// first one completed (asynq has dropped its uniqueness lock by then).
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(sweep, opts...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "second sweep done", func() bool {
		info, err := e.inspector.GetQueueInfo("maintenance")
		return err == nil && info.Pending == 0 && info.Active == 0 && info.Processed >= 3
	})
	if n := st.hits(); n != 2 {
		t.Errorf("addon calls = %d, want 2 (initialization, one sweep check per day)", n)
	}
}

func TestWorker_UnreadableLicenseDoesNotBlockInitialization(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-403-0123456789abcdef"
	st := newSite()
	st.addonCode, st.addonBody = http.StatusForbidden, `{"message":"not allowed"}`
	prod := newProduct(t, secret, st)
	init := &blockingInitializer{started: make(chan struct{}), runs: 1} // runs=1: never blocks
	e.startWorker(service.WorkerOptions{Initializer: init})
	e.install("ck-1", prod, secret)
	eventually(t, 5*time.Second, "initializer ran and webhook registered", func() bool {
		init.mu.Lock()
		defer init.mu.Unlock()
		return init.completed == 1 && st.putCount() == 1
	})
	tn, err := e.store.Get(context.Background(), "ck-1")
	if err != nil || tn.LicenseState != connectrelay.LicenseUnknown {
		t.Errorf("license state = %q (%v), want unknown", tn.LicenseState, err)
	}
}

func TestMonitoring_ReadOnlyRefusesChanges(t *testing.T) {
	t.Parallel()
	const token = "admin-token-e2e-ro-0123456789abcdef"
	e := newE2EWith(t, token, func(c *config.Config) { c.MonitoringReadOnly = true })
	call := func(method, path string) int {
		req, _ := http.NewRequest(method, e.internalURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call(http.MethodGet, "/monitoring/api/queues"); code != http.StatusOK {
		t.Errorf("read in read-only mode = %d, want 200", code)
	}
	for _, c := range []struct{ method, path string }{
		// Without read-only this answers 204 (checked when the test was written).
		{http.MethodPost, "/monitoring/api/queues/lifecycle:pause"},
	} {
		if code := call(c.method, c.path); code < 400 {
			t.Errorf("%s %s in read-only mode = %d, want a refusal", c.method, c.path, code)
		}
	}
}

func TestMonitoring_CrossSitePauseIsRefusedAndSameOriginWorks(t *testing.T) {
	t.Parallel()
	const token = "admin-token-e2e-csrf-0123456789abcdef"
	e := newE2E(t, token)
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("vendor:thing", nil), asynq.Queue("lifecycle")); err != nil {
		t.Fatal(err)
	}
	paused := func() bool {
		info, err := e.inspector.GetQueueInfo("lifecycle")
		if err != nil {
			t.Fatalf("queue info: %v", err)
		}
		return info.Paused
	}
	// What the browser of an operator sends when another site's page posts a
	// form to the UI: the cached basic credentials, and the other site as origin.
	pause := func(secFetchSite, origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.internalURL+"/monitoring/api/queues/lifecycle:pause", strings.NewReader("x=1"))
		req.SetBasicAuth("ops", token)
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Sec-Fetch-Site", secFetchSite)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := pause("cross-site", "https://evil.example")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site pause = %d, want 403", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", got)
	}
	if paused() {
		t.Fatal("a cross-site form paused the lifecycle queue")
	}
	// The UI's own fetch (same origin) still pauses it.
	if resp := pause("same-origin", e.internalURL); resp.StatusCode != http.StatusNoContent {
		t.Errorf("same-origin pause = %d, want 204", resp.StatusCode)
	}
	if !paused() {
		t.Error("the UI's own pause did not pause the queue")
	}
}
