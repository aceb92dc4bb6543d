package handlers_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/tasks"
)

// forgeDelivery is one Forge POST: a token to mint (or a raw Authorization
// header), a body, and the app system token header.
type forgeDelivery struct {
	token       forgetest.Token
	auth        string // replaces the minted Bearer header when set
	noAuth      bool
	body        any
	systemToken string
}

type forgeAnswer struct {
	status int
	body   string
	header http.Header
}

func (h *harness) forgePost(path string, d forgeDelivery) forgeAnswer {
	h.t.Helper()
	raw, ok := d.body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(d.body); err != nil {
			h.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, h.baseURL+path, bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case d.noAuth:
	case d.auth != "":
		req.Header.Set("Authorization", d.auth)
	default:
		tok, err := h.forge.Mint(d.token)
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if d.systemToken != "" {
		req.Header.Set(forge.SystemTokenHeader, d.systemToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return forgeAnswer{resp.StatusCode, b.String(), resp.Header}
}

// installedBody is Atlassian's documented avi:forge:installed:app body.
func installedBody(tok forgetest.Token, eventType string) map[string]any {
	return map[string]any{
		"eventType": eventType,
		"id":        strings.TrimPrefix(tok.InstallationID, forge.InstallationARIPrefix),
		"context":   "ari:cloud:jira::site/" + tok.CloudID,
		"app":       map[string]any{"version": tok.AppVersion},
	}
}

// fakeSystemToken is an opaque JWT-shaped system token, unique per call.
func fakeSystemToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." +
		enc(fmt.Appendf(nil, `{"exp":%d,"jti":%q}`, time.Now().Add(3*time.Hour).Unix(), forgetest.NewUUID())) + ".c2ln"
}

func forgeInitTasks(t *testing.T, h *harness) []tasks.TenantPayload {
	t.Helper()
	var out []tasks.TenantPayload
	for _, ti := range h.tasksIn(tasks.QueueLifecycle) {
		if ti.Type == tasks.TypeForgeInit {
			out = append(out, decodePayload(t, ti))
		}
	}
	return out
}

func TestForgeLifecycle_InstalledRetriedWithANewTokenGivesOneTask(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	tok := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(), AppVersion: "1.2.0"}
	sys := fakeSystemToken()
	for i := range 3 {
		a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: installedBody(tok, forge.EventInstalled), systemToken: sys})
		if a.status != http.StatusNoContent {
			t.Fatalf("delivery %d: %d %s", i, a.status, a.body)
		}
	}
	got := forgeInitTasks(t, h)
	if len(got) != 1 || got[0].ClientKey != tok.InstallationID {
		t.Fatalf("forge:init tasks = %+v, want one for %s", got, tok.InstallationID)
	}
	tn, err := h.store.Get(context.Background(), tok.InstallationID)
	if err != nil || tn.Forge == nil || tn.Forge.AppVersion != "1.2.0" || !tn.Installed {
		t.Fatalf("tenant = %+v, %v", tn, err)
	}
	for _, ti := range h.tasksIn(tasks.QueueLifecycle) {
		if bytes.Contains(ti.Payload, []byte(sys)) {
			t.Error("the system token is in a task payload")
		}
	}
	if strings.Contains(h.logs.String(), sys) || strings.Contains(h.logs.String(), strings.Split(sys, ".")[1]) {
		t.Error("the system token is in the logs")
	}
}

func TestForgeLifecycle_AcceptsBothEnvelopesAndATokenWithoutVersion(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	active := true
	for name, wrap := range map[string]func(map[string]any) any{
		"top level": func(m map[string]any) any { return m },
		"payload": func(m map[string]any) any {
			return map[string]any{"payload": m, "retryContext": map[string]any{"retryCount": 1}}
		},
	} {
		tok := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(),
			License: &forge.License{Active: &active}, AppExtra: map[string]any{"appVersion": nil}}
		a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: wrap(installedBody(tok, forge.EventInstalled))})
		if a.status != http.StatusNoContent {
			t.Errorf("%s: %d %s", name, a.status, a.body)
			continue
		}
		tn, err := h.store.Get(context.Background(), tok.InstallationID)
		if err != nil || tn.LicenseState != "active" {
			t.Errorf("%s: tenant = %+v, %v; want the license active from app.license.active", name, tn, err)
		}
	}
}

func TestForgeLifecycle_UpgradeAndPreUninstall(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	tok := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(), AppVersion: "1.0.0"}
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: installedBody(tok, forge.EventInstalled)}); a.status != 204 {
		t.Fatalf("installed: %d %s", a.status, a.body)
	}
	tok.AppVersion, tok.IssuedAt = "2.0.0", time.Now().Add(time.Second)
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: installedBody(tok, forge.EventUpgraded)}); a.status != 204 {
		t.Fatalf("upgraded: %d %s", a.status, a.body)
	}
	if n := len(forgeInitTasks(t, h)); n != 2 {
		t.Errorf("forge:init tasks = %d, want one per installed and upgraded", n)
	}
	tok.IssuedAt = time.Now().Add(2 * time.Second)
	if a := h.forgePost(handlers.PathForgePreUninstall, forgeDelivery{token: tok, body: map[string]any{}}); a.status != 204 {
		t.Fatalf("pre-uninstall: %d %s", a.status, a.body)
	}
	fi, err := h.store.ForgeInstallation(context.Background(), tok.InstallationID)
	if err != nil || fi.AppVersion != "2.0.0" || fi.PreUninstalledAt == nil {
		t.Fatalf("installation = %+v, %v", fi, err)
	}
	if n := len(forgeInitTasks(t, h)); n != 2 {
		t.Errorf("forge:init tasks after pre-uninstall = %d, want still 2", n)
	}
}

func TestForgeRoutes_RefuseEveryBadTokenWith401WithoutDetail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true, forgeModules: []string{"lifecycle-endpoint"}})
	now := time.Now()
	tests := []struct {
		name string
		d    forgeDelivery
	}{
		{"no Authorization", forgeDelivery{noAuth: true}},
		{"Basic scheme", forgeDelivery{auth: "Basic dXNlcjpwYXNz"}},
		{"wrong iss", forgeDelivery{token: forgetest.Token{Issuer: "forge/other"}}},
		{"bare uuid aud", forgeDelivery{token: forgetest.Token{Audience: strings.TrimPrefix(h.forge.AppID(), forge.AppARIPrefix)}}},
		{"foreign aud", forgeDelivery{token: forgetest.Token{Audience: forge.AppARIPrefix + forgetest.NewUUID()}}},
		{"HS256", forgeDelivery{token: forgetest.Token{Alg: "HS256"}}},
		{"none", forgeDelivery{token: forgetest.Token{Alg: "none"}}},
		{"missing kid", forgeDelivery{token: forgetest.Token{OmitKid: true}}},
		{"unknown kid", forgeDelivery{token: forgetest.Token{Kid: "kid-nobody-has"}}},
		{"expired", forgeDelivery{token: forgetest.Token{IssuedAt: now.Add(-time.Minute)}}},
		{"not yet valid", forgeDelivery{token: forgetest.Token{IssuedAt: now.Add(time.Minute)}}},
		{"environment not allowed", forgeDelivery{token: forgetest.Token{EnvironmentType: "DEVELOPMENT"}}},
		{"foreign apiBaseUrl host", forgeDelivery{token: forgetest.Token{APIBaseURL: "https://evil.example.com/ex/jira/x"}}},
		{"module key of another route", forgeDelivery{token: forgetest.Token{ModuleKey: "migration-endpoint"}}},
		{"40 KiB header", forgeDelivery{auth: "Bearer " + strings.Repeat("a", 40<<10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.body = map[string]any{"eventType": forge.EventInstalled}
			a := h.forgePost(handlers.PathForgeLifecycle, tt.d)
			if a.status != http.StatusUnauthorized {
				t.Fatalf("status = %d %s, want 401", a.status, a.body)
			}
			if strings.TrimSpace(a.body) != `{"error":"unauthorized"}` {
				t.Errorf("body = %s, want no detail", a.body)
			}
			if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := len(forgeInitTasks(t, h)); n != 0 {
		t.Errorf("%d tasks enqueued by refused deliveries", n)
	}
	var installs int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM forge_installations`).Scan(&installs); err != nil || installs != 0 {
		t.Errorf("installations stored = %d, %v; want 0", installs, err)
	}
}

func TestForgeLifecycle_BadBodiesAre400NamingTheField(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	for name, tt := range map[string]struct {
		body  any
		field string
	}{
		"not JSON":          {[]byte("installed!"), "body"},
		"JSON array":        {[]any{1, 2}, "body"},
		"payload not obj":   {map[string]any{"payload": "x"}, "body"},
		"unknown eventType": {map[string]any{"eventType": "avi:jira:created:issue"}, "eventType"},
	} {
		a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{body: tt.body})
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, `"field":"`+tt.field+`"`) {
			t.Errorf("%s: %d %s, want 400 naming %s", name, a.status, a.body, tt.field)
		}
	}
}

func TestForgeLifecycle_JWKSDownColdIs503WarmStillVerifies(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	h.forge.SetDown(true)
	tok := forgetest.Token{InstallationID: forgetest.NewInstallationID()}
	start := time.Now()
	a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: map[string]any{"eventType": forge.EventInstalled}})
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Fatalf("cold, JWKS down: %d %s, want 503 with Retry-After", a.status, a.body)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("503 took %s, want within the request budget", d)
	}
	h.forge.SetDown(false)
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: map[string]any{"eventType": forge.EventInstalled}}); a.status != 204 {
		t.Fatalf("JWKS back: %d %s", a.status, a.body)
	}
	h.forge.SetDown(true)
	tok.IssuedAt = time.Now().Add(time.Second)
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: map[string]any{"eventType": forge.EventUpgraded}}); a.status != 204 {
		t.Errorf("warm keys, JWKS down: %d %s, want 204", a.status, a.body)
	}
}

func TestForgeLifecycle_PostgresHungIs503WithinASecond(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true, viaProxies: true})
	h.pgProxy.Freeze()
	defer h.pgProxy.Thaw()
	start := time.Now()
	a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{body: map[string]any{"eventType": forge.EventInstalled}})
	if a.status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d %s, want 503", a.status, a.body)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("503 took %s, want about the 950 ms budget", d)
	}
}

func TestForgeRoutes_AbsentWithoutForgeAppID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, p := range []string{handlers.PathForgeLifecycle, handlers.PathForgePreUninstall} {
		resp, err := http.Post(h.baseURL+p, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s without FORGE_APP_ID: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestAPITenant_ShowsAForgeInstallationByItsInstallationID(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{forge: true})
	tok := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(), AppVersion: "4.0.0"}
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: tok, body: installedBody(tok, forge.EventInstalled), systemToken: fakeSystemToken()}); a.status != 204 {
		t.Fatalf("installed: %d %s", a.status, a.body)
	}
	code, out := h.api(http.MethodGet, "/v1/tenants/"+url.PathEscape(tok.InstallationID), nil)
	if code != http.StatusOK {
		t.Fatalf("GET tenant = %d %v", code, out)
	}
	tn, _ := out["tenant"].(map[string]any)
	fi, _ := tn["forge"].(map[string]any)
	if tn["platform"] != "forge" || tn["installationId"] != tok.InstallationID || fi["appVersion"] != "4.0.0" {
		t.Errorf("tenant = %v", tn)
	}
	if hist, _ := out["history"].([]any); len(hist) != 1 {
		t.Errorf("history = %v, want the installed delivery", out["history"])
	}
	b, _ := json.Marshal(out)
	if strings.Contains(string(b), "systemToken\"") || strings.Contains(string(b), "c2ln") {
		t.Errorf("the API answer carries the system token: %s", b)
	}
	if code, _ := h.api(http.MethodGet, "/v1/tenants/"+url.PathEscape(forgetest.NewInstallationID()), nil); code != http.StatusNotFound {
		t.Errorf("unknown installation = %d, want 404", code)
	}
}

func TestForgeMigration_EnqueuesOncePerMessageUnderTheInstallation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{forge: true})
	tok := forgetest.Token{InstallationID: forgetest.NewInstallationID(), ModuleKey: "migration-endpoint"}
	ev := map[string]any{"eventType": "avi:ecosystem.migration:uploaded:app_data", "transferId": forgetest.NewUUID(),
		"key": "s3/key-1", "messageId": "msg-1",
		"migrationDetails": map[string]any{"migrationId": "m", "migrationScopeId": "s", "createdAt": 1, "cloudUrl": "https://x.atlassian.net", "name": "n"}}
	for i, body := range []any{ev, map[string]any{"payload": ev}} {
		if a := h.forgePost(handlers.PathForgeMigration, forgeDelivery{token: tok, body: body, systemToken: fakeSystemToken()}); a.status != http.StatusNoContent {
			t.Fatalf("delivery %d: %d %s", i, a.status, a.body)
		}
	}
	list := h.tasksIn(tasks.QueueMigration)
	if len(list) != 1 || !bytes.Contains(list[0].Payload, []byte(tok.InstallationID)) {
		t.Fatalf("migration tasks = %d, want one under the installation", len(list))
	}
	if bytes.Contains(list[0].Payload, []byte("c2ln")) {
		t.Error("the system token is in the task")
	}
	if _, err := h.store.ForgeCredentials(context.Background(), tok.InstallationID); err != nil {
		t.Errorf("system token not stored for the worker: %v", err)
	}
	for name, body := range map[string]any{
		"not an object":        []byte(`"x"`),
		"no transferId":        map[string]any{"eventType": "avi:ecosystem.migration:triggered:listener", "messageId": "m"},
		"connect event shaped": map[string]any{"eventType": "listener-triggered", "transferId": "t"},
	} {
		if a := h.forgePost(handlers.PathForgeMigration, forgeDelivery{token: tok, body: body}); a.status != http.StatusBadRequest || !strings.Contains(a.body, `"field"`) {
			t.Errorf("%s: %d %s, want 400 naming the field", name, a.status, a.body)
		}
	}
	if a := h.forgePost(handlers.PathForgeMigration, forgeDelivery{token: forgetest.Token{Alg: "none"}, body: ev}); a.status != http.StatusUnauthorized {
		t.Errorf("unsigned: %d, want 401", a.status)
	}
}
