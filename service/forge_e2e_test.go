package service_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/service"
	"github.com/connectrelay/connectrelay/tasks"
)

// forgeWorld is Forge played on loopback: an issuer whose JWKS the receiver
// fetches, and api.atlassian.com answering Jira's serverInfo to the system
// tokens it handed out.
type forgeWorld struct {
	t       *testing.T
	issuer  *forgetest.Issuer
	api     *httptest.Server
	jwksURL string

	mu     sync.Mutex
	tokens map[string]bool // system tokens handed out
	calls  []string        // serverInfo calls, by path
}

func newForgeWorld(t *testing.T) *forgeWorld {
	t.Helper()
	iss, err := forgetest.NewIssuer("")
	if err != nil {
		t.Fatal(err)
	}
	w := &forgeWorld{t: t, issuer: iss, tokens: map[string]bool{}}
	w.api = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.api.Close)
	jwks := httptest.NewServer(iss.Handler())
	t.Cleanup(jwks.Close)
	w.jwksURL = jwks.URL
	return w
}

// configure points the service's Forge settings at the world.
func (w *forgeWorld) configure(c *config.Config) {
	c.ForgeAppID, c.ForgeJWKSURL = w.issuer.AppID(), w.jwksURL
	c.ForgeEnvironments, c.ForgeAPIHosts = []string{"PRODUCTION"}, []string{"127.0.0.1"}
}

func (w *forgeWorld) serve(rw http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	w.mu.Lock()
	known := w.tokens[tok]
	w.calls = append(w.calls, r.URL.Path)
	w.mu.Unlock()
	if !known {
		http.Error(rw, "unknown system token", http.StatusUnauthorized)
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/rest/api/3/serverInfo") {
		http.NotFound(rw, r)
		return
	}
	cloud := strings.Split(strings.TrimPrefix(r.URL.Path, "/ex/jira/"), "/")[0]
	_ = json.NewEncoder(rw).Encode(map[string]any{"baseUrl": "https://site-" + cloud[:8] + ".atlassian.net", "version": "1001.0.0"})
}

// systemToken hands out a fresh JWT-shaped app system token.
func (w *forgeWorld) systemToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	tok := enc([]byte(`{"alg":"RS256","kid":"system"}`)) + "." +
		enc(fmt.Appendf(nil, `{"exp":%d,"jti":%q,"sub":"app-system"}`, time.Now().Add(3*time.Hour).Unix(), forgetest.NewUUID())) + "." +
		enc([]byte(forgetest.NewUUID()))
	w.mu.Lock()
	w.tokens[tok] = true
	w.mu.Unlock()
	return tok
}

// installation is one Forge installation's token template.
func (w *forgeWorld) installation() forgetest.Token {
	cloud := forgetest.NewCloudID()
	return forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: cloud,
		APIBaseURL: w.api.URL + "/ex/jira/" + cloud, AppVersion: "1.0.0"}
}

// deliver POSTs a Forge delivery with a freshly minted token, as Forge
// (and its retries) do, and returns the status.
func (w *forgeWorld) deliver(e *e2e, path string, tok forgetest.Token, body any, systemToken string) int {
	w.t.Helper()
	fit, err := w.issuer.Mint(tok)
	if err != nil {
		w.t.Fatal(err)
	}
	b, ok := body.([]byte)
	if !ok {
		b, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.cfg.BaseURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+fit)
	req.Header.Set("Content-Type", "application/json")
	if systemToken != "" {
		req.Header.Set(forge.SystemTokenHeader, systemToken)
	}
	return e.do(req)
}

func lifecycleEvent(tok forgetest.Token, typ string) map[string]any {
	return map[string]any{"eventType": typ, "id": strings.TrimPrefix(tok.InstallationID, forge.InstallationARIPrefix),
		"context": "ari:cloud:jira::site/" + tok.CloudID, "app": map[string]any{"version": tok.AppVersion}}
}

func (l *recordingListener) forgeEvents(id string) []*connectrelay.LifecycleEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*connectrelay.LifecycleEvent
	for _, ev := range l.tenant {
		if ev.Tenant.InstallationID == id {
			out = append(out, ev)
		}
	}
	// Retries may deliver out of order; Sequence is the recorded order.
	slices.SortStableFunc(out, func(a, b *connectrelay.LifecycleEvent) int { return cmp.Compare(a.Sequence, b.Sequence) })
	return out
}

func eventTypes(evs []*connectrelay.LifecycleEvent) string {
	var s []string
	for _, ev := range evs {
		s = append(s, string(ev.Type))
	}
	return strings.Join(s, ",")
}

func TestForge_InstallUpgradePreUninstallReachTheListenerOnceEach(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-forge-0123456789abcdef"
	w := newForgeWorld(t)
	e := newE2EWith(t, admin, w.configure)
	l := &recordingListener{failFirst: 1}
	defer e.startWorker(service.WorkerOptions{Listener: l})()

	tok := w.installation()
	var handedOut []string
	// installed, delivered three times (Forge's retries carry new tokens).
	for range 3 {
		sys := w.systemToken()
		handedOut = append(handedOut, sys)
		if code := w.deliver(e, handlers.PathForgeLifecycle, tok, lifecycleEvent(tok, forge.EventInstalled), sys); code != http.StatusNoContent {
			t.Fatalf("installed: %d", code)
		}
	}
	want := "https://site-" + tok.CloudID[:8] + ".atlassian.net"
	eventually(t, 15*time.Second, "the site URL learnt through serverInfo", func() bool {
		fi, err := e.store.ForgeInstallation(context.Background(), tok.InstallationID)
		return err == nil && fi.SiteURL == want
	})
	tok.AppVersion, tok.IssuedAt = "2.0.0", time.Now().Add(time.Second)
	sys := w.systemToken()
	handedOut = append(handedOut, sys)
	if code := w.deliver(e, handlers.PathForgeLifecycle, tok, lifecycleEvent(tok, forge.EventUpgraded), sys); code != http.StatusNoContent {
		t.Fatalf("upgraded: %d", code)
	}
	tok.IssuedAt = time.Now().Add(2 * time.Second)
	for range 2 {
		if code := w.deliver(e, handlers.PathForgePreUninstall, tok, map[string]any{"id": tok.InstallationID}, ""); code != http.StatusNoContent {
			t.Fatalf("pre-uninstall: %d", code)
		}
	}
	wantTypes := "forge.installed,forge.upgraded,forge.pre_uninstall"
	eventually(t, 30*time.Second, "the listener hears "+wantTypes, func() bool {
		return eventTypes(l.forgeEvents(tok.InstallationID)) == wantTypes
	})
	evs := l.forgeEvents(tok.InstallationID)
	if tn := evs[len(evs)-1].Tenant; tn.Platform != connectrelay.PlatformForge || tn.ID() != tok.InstallationID || tn.BaseURL != want ||
		tn.Forge == nil || tn.Forge.AppVersion != "2.0.0" || tn.Forge.PreUninstalledAt == nil {
		t.Errorf("tenant of the last event = %+v (forge %+v)", tn, tn.Forge)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate delivery would show up by now
	if got := eventTypes(l.forgeEvents(tok.InstallationID)); got != wantTypes {
		t.Errorf("events = %s, want each once: %s", got, wantTypes)
	}
	assertNoTaskLeft(t, e)
	assertSecretsNowhere(t, e, admin, handedOut)
}

func TestForge_ConnectOnForgeTenantStaysOneTenant(t *testing.T) {
	t.Parallel()
	w := newForgeWorld(t)
	e := newE2EWith(t, "", w.configure)
	l := &recordingListener{}
	defer e.startWorker(service.WorkerOptions{Listener: l})()

	tok := w.installation()
	site := newProduct(t, "cof-secret-0123456789", newSite())
	body := atlassiantest.InstallBody("cof-tenant", site.BaseURL(), "cof-secret-0123456789", appKey)
	body["installationId"], body["cloudId"] = tok.InstallationID, tok.CloudID
	if code := e.do(e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "cof-tenant"})); code != http.StatusNoContent {
		t.Fatalf("Connect installed: %d", code)
	}
	tok.AppVersion = "5.0.0"
	if code := w.deliver(e, handlers.PathForgeLifecycle, tok, lifecycleEvent(tok, forge.EventUpgraded), w.systemToken()); code != http.StatusNoContent {
		t.Fatalf("Forge upgraded: %d", code)
	}
	eventually(t, 20*time.Second, "the listener hears the Forge upgrade", func() bool {
		return strings.Contains(eventTypes(l.forgeEvents(tok.InstallationID)), "forge.upgraded")
	})
	for _, ev := range l.forgeEvents(tok.InstallationID) {
		if ev.Tenant.ClientKey != "cof-tenant" || ev.Tenant.Platform != connectrelay.PlatformConnectOnForge {
			t.Errorf("%s reported for %q (%s), want the Connect tenant cof-tenant", ev.Type, ev.Tenant.ID(), ev.Tenant.Platform)
		}
	}
	tn, err := e.store.Get(context.Background(), tok.InstallationID)
	if err != nil || tn.ClientKey != "cof-tenant" || tn.Forge == nil || tn.Forge.AppVersion != "5.0.0" {
		t.Fatalf("by installationId: %+v, %v", tn, err)
	}
	var tenants, links int
	if err := e.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM tenants),
		(SELECT count(*) FROM forge_installations WHERE client_key = 'cof-tenant')`).Scan(&tenants, &links); err != nil {
		t.Fatal(err)
	}
	if tenants != 1 || links != 1 {
		t.Errorf("tenants = %d, linked installations = %d; want 1 and 1", tenants, links)
	}
}

// assertNoTaskLeft fails when a task is still pending, retrying or archived.
func assertNoTaskLeft(t *testing.T, e *e2e) {
	t.Helper()
	eventually(t, 10*time.Second, "no task left pending, active, retrying or archived", func() bool {
		for q := range tasks.Queues {
			info, err := e.inspector.GetQueueInfo(q)
			if err != nil {
				continue // a queue never used
			}
			if info.Pending+info.Active+info.Retry+info.Archived+info.Scheduled > 0 {
				return false
			}
		}
		return true
	})
}

// assertSecretsNowhere fails when one of secrets appears in Redis (every key
// and value of the test's DB), the logs, the monitoring UI's task lists or a
// pg_dump of the database.
func assertSecretsNowhere(t *testing.T, e *e2e, adminToken string, secrets []string) {
	t.Helper()
	var haystacks []string
	ctx := context.Background()
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	haystacks = append(haystacks, redisContents(t, ctx, rdb))
	haystacks = append(haystacks, e.logs.String())
	for q := range tasks.Queues {
		for _, state := range []string{"pending", "completed", "retry", "archived"} {
			req, _ := http.NewRequest(http.MethodGet, e.internalURL+"/monitoring/api/queues/"+q+"/"+state+"_tasks", nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			haystacks = append(haystacks, string(b))
		}
	}
	dump, err := exec.Command("pg_dump", "--data-only", e.cfg.DatabaseURL).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump: %v: %s", err, dump)
	}
	if !bytes.Contains(dump, []byte("forge_installations")) {
		t.Fatalf("pg_dump has no forge_installations: %.300s", dump)
	}
	haystacks = append(haystacks, string(dump))
	for _, s := range secrets {
		payload := strings.Split(s, ".")[1]
		for i, h := range haystacks {
			if strings.Contains(h, s) || strings.Contains(h, payload) {
				t.Errorf("a system token appears in haystack %d (redis, logs, UI x%d, pg_dump)", i, len(tasks.Queues)*4)
			}
		}
	}
}

// redisContents is every key and value of rdb's database as text.
func redisContents(t *testing.T, ctx context.Context, rdb redis.UniversalClient) string {
	t.Helper()
	var b strings.Builder
	iter := rdb.Scan(ctx, 0, "*", 500).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		b.WriteString(k + "\n")
		typ, _ := rdb.Type(ctx, k).Result()
		switch typ {
		case "string":
			b.WriteString(rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				b.WriteString(f + "=" + v + "\n")
			}
		case "list":
			b.WriteString(strings.Join(rdb.LRange(ctx, k, 0, -1).Val(), "\n"))
		case "set":
			b.WriteString(strings.Join(rdb.SMembers(ctx, k).Val(), "\n"))
		case "zset":
			b.WriteString(strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), "\n"))
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprint(&b, m.Values)
			}
		}
		b.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan redis: %v", err)
	}
	return b.String()
}

func TestReceiver_WarnsAtStartUpOfEachForgeRouteWithoutModuleKeys(t *testing.T) {
	t.Parallel()
	w := newForgeWorld(t)
	e := newE2EWith(t, "admin-token-forge-modules-0123456789", func(c *config.Config) {
		w.configure(c)
		c.ForgeMigrationModules = []string{"connectrelay-migration"}
	})
	var warned []string
	for _, line := range e.logs.Lines() {
		var rec struct {
			Msg      string `json:"msg"`
			Variable string `json:"variable"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, "Forge module keys not set") {
			warned = append(warned, rec.Variable)
		}
	}
	want := []string{"FORGE_LIFECYCLE_MODULE_KEYS", "FORGE_PREUNINSTALL_MODULE_KEYS"}
	if !slices.Equal(warned, want) {
		t.Errorf("start-up warnings for %v, want %v (FORGE_MIGRATION_MODULE_KEYS is set)", warned, want)
	}
}
