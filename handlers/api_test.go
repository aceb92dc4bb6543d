package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/product/producttest"
	"github.com/connectrelay/connectrelay/tasks"
)

const internalToken = "internal-token-0123456789abcdef0123456789"

// fakeData serves the content of uploads by s3Key, as product.AMP.OpenData does.
type fakeData map[string]string

func (f fakeData) OpenData(_ context.Context, _, s3Key string) (io.ReadCloser, error) {
	c, ok := f[s3Key]
	if !ok {
		return nil, &product.StatusError{Method: "GET", Route: product.RouteData, StatusCode: http.StatusNotFound}
	}
	return io.NopCloser(strings.NewReader(c)), nil
}

func apiHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	o.internalToken = internalToken
	if o.data == nil {
		o.data = fakeData{}
	}
	return newHarness(t, o)
}

// api calls the internal API with the token; body is JSON-encoded unless nil.
func (h *harness) api(method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.internalURL+path, r)
	req.Header.Set("Authorization", "Bearer "+internalToken)
	code, text := h.do(req)
	var out map[string]any
	_ = json.Unmarshal([]byte(text), &out)
	return code, out
}

func TestAPI_NeedsTheTokenAndIsNotOnThePublicListener(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{adminToken: "admin-token-0123456789abcdef", monitoring: http.NotFoundHandler()})
	off := newHarness(t, harnessOpts{})
	for _, tt := range []struct {
		name string
		url  string
		auth string
		want int
	}{
		{"no token", h.internalURL + handlers.PathV1Tenants, "", http.StatusUnauthorized},
		{"wrong token", h.internalURL + handlers.PathV1Tenants, "Bearer nope", http.StatusUnauthorized},
		{"the token", h.internalURL + handlers.PathV1Tenants, "Bearer " + internalToken, http.StatusOK},
		{"no INTERNAL_TOKEN configured", off.internalURL + handlers.PathV1Tenants, "Bearer " + internalToken, http.StatusNotFound},
		{"public listener: /v1", h.baseURL + handlers.PathV1Tenants, "Bearer " + internalToken, http.StatusNotFound},
		{"public listener: /metrics", h.baseURL + handlers.PathMetrics, "", http.StatusNotFound},
		{"public listener: /monitoring", h.baseURL + handlers.PathMonitoring, "Bearer admin-token-0123456789abcdef", http.StatusNotFound},
		{"internal listener: /metrics", h.internalURL + handlers.PathMetrics, "", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		if code, body := h.do(req); code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
	}
}

// pageURL is an iframe load of the app's page, as the product makes it.
func pageURL(h *harness) string {
	return h.baseURL + "/page?xdm_e=https%3A%2F%2Fx.atlassian.net&lic=active&cp="
}

func TestAPIVerify_AgreesWithTheReceiverOnAttacks(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	sign := func(tok atlassiantest.Token, method, rawURL string) string {
		req, _ := http.NewRequest(method, rawURL, nil)
		return h.atl.Sign(t, req, h.baseURL, tok)
	}
	good := atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}
	other := good
	other.QSH = connect.QSH(http.MethodGet, &url.URL{Path: "/admin"}, "")
	ctxTok := good
	ctxTok.QSH = connect.ContextQSH
	wrong := good
	wrong.Secret = []byte("not-the-secret-0123456789abcdef0123456789")
	expired := good
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-time.Hour), time.Now().Add(-30*time.Minute)
	unknown := good
	unknown.Issuer = "ck-nobody"
	tests := []struct {
		name         string
		tok          atlassiantest.Token
		inQuery      bool
		allowContext bool
		want         int
		reason       string
	}{
		{"a page load, token in the query", good, true, false, http.StatusOK, ""},
		{"a webhook, token in the header", good, false, false, http.StatusOK, ""},
		{"alg none", atlassiantest.Token{Alg: "none", Issuer: "ck-1"}, false, false, http.StatusUnauthorized, "bad_algorithm"},
		{"wrong secret", wrong, false, false, http.StatusUnauthorized, "bad_signature"},
		{"qsh for another path", other, false, false, http.StatusUnauthorized, "qsh_mismatch"},
		{"context qsh, not allowed", ctxTok, false, false, http.StatusUnauthorized, "qsh_mismatch"},
		{"context qsh, allowed", ctxTok, false, true, http.StatusOK, ""},
		{"expired", expired, false, false, http.StatusUnauthorized, "expired"},
		{"unknown issuer", unknown, false, false, http.StatusUnauthorized, "unknown_issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := pageURL(h)
			tok := sign(tt.tok, http.MethodGet, u)
			body := map[string]any{"method": "GET", "url": u, "allowContextQsh": tt.allowContext}
			if tt.inQuery {
				body["url"] = u + "&jwt=" + tok
			} else {
				body["authorization"] = "JWT " + tok
			}
			code, out := h.api(http.MethodPost, handlers.PathV1Verify, body)
			if code != tt.want || (tt.reason != "" && out["reason"] != tt.reason) {
				t.Fatalf("verify = %d %v, want %d reason %q", code, out, tt.want, tt.reason)
			}
			if code == http.StatusOK {
				tn, _ := out["tenant"].(map[string]any)
				claims, _ := out["claims"].(map[string]any)
				if tn["clientKey"] != "ck-1" || claims["iss"] != "ck-1" {
					t.Errorf("verified tenant %v, claims %v", tn, claims)
				}
				if strings.Contains(mustJSON(t, out), secretA) {
					t.Error("the answer holds the shared secret")
				}
				return
			}
			// The receiver refuses the same token on a route of its own.
			if tt.allowContext || tt.tok.Issuer == "" {
				return
			}
			req := h.atl.Request(t, h.baseURL, handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), tt.tok)
			if code, _ := h.do(req); code != http.StatusUnauthorized {
				t.Errorf("the receiver answered %d to the token /v1/verify refused", code)
			}
		})
	}
	if code, out := h.api(http.MethodPost, handlers.PathV1Verify, map[string]any{"method": "GET", "url": "/page"}); code != http.StatusBadRequest || out["field"] != "url" {
		t.Errorf("a relative url = %d %v, want 400 naming url", code, out)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAPISign_IsAcceptedByTheProductAndStaysOnTheTenantsSite(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{productHosts: []string{"127.0.0.1"}})
	prod := producttest.New(t, producttest.Config{AppKey: appKey, Secret: []byte(secretA), BasePath: "/wiki"})
	if code, body := h.install("ck-1", prod.BaseURL(), secretA); code != http.StatusNoContent {
		t.Fatalf("install = %d %s", code, body)
	}
	for _, target := range []string{"/rest/api/content?limit=2&expand=space", prod.BaseURL() + "/rest/api/space"} {
		code, out := h.api(http.MethodPost, handlers.PathV1Sign, map[string]any{"clientKey": "ck-1", "method": "GET", "url": target})
		if code != http.StatusOK {
			t.Fatalf("sign %s = %d %v", target, code, out)
		}
		req, _ := http.NewRequest(http.MethodGet, out["url"].(string), nil)
		req.Header.Set("Authorization", out["authorization"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("the product answered %d to the signed call of %s", resp.StatusCode, target)
		}
	}
	if n := len(prod.Requests()); n != 2 {
		t.Errorf("the product verified %d calls, want 2", n)
	}
	for _, tt := range []struct {
		name  string
		body  map[string]any
		want  int
		field string
	}{
		{"another host", map[string]any{"clientKey": "ck-1", "method": "GET", "url": "https://evil.example.com/rest/api/3/myself"}, 400, "url"},
		{"outside the base path", map[string]any{"clientKey": "ck-1", "method": "GET", "url": prod.Origin() + "/rest/api/space"}, 400, "url"},
		{"no clientKey", map[string]any{"method": "GET", "url": "/x"}, 400, "clientKey"},
		{"unknown tenant", map[string]any{"clientKey": "ck-nobody", "method": "GET", "url": "/x"}, 404, "clientKey"},
	} {
		if code, out := h.api(http.MethodPost, handlers.PathV1Sign, tt.body); code != tt.want || out["field"] != tt.field {
			t.Errorf("%s: %d %v, want %d naming %s", tt.name, code, out, tt.want, tt.field)
		}
	}
}

func TestAPITenants_FiltersPagesAndShowsHistory(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{})
	for _, ck := range []string{"ck-a", "ck-b", "ck-c"} {
		h.install(ck, site, secretA)
	}
	req := h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody("ck-b", site, "uninstalled"), atlassiantest.Token{Issuer: "ck-b"})
	h.do(req)
	code, out := h.api(http.MethodGet, handlers.PathV1Tenants+"?state=installed&limit=1", nil)
	var keys []string
	for code == http.StatusOK {
		for _, tn := range out["tenants"].([]any) {
			keys = append(keys, tn.(map[string]any)["clientKey"].(string))
		}
		next, ok := out["next"].(string)
		if !ok {
			break
		}
		code, out = h.api(http.MethodGet, handlers.PathV1Tenants+"?state=installed&limit=1&after="+url.QueryEscape(next), nil)
	}
	if strings.Join(keys, ",") != "ck-a,ck-c" {
		t.Errorf("installed tenants one per page = %v (last answer %d %v)", keys, code, out)
	}
	if code, out := h.api(http.MethodGet, handlers.PathV1Tenants+"?state=gone", nil); code != 400 || out["field"] != "state" {
		t.Errorf("bad state = %d %v", code, out)
	}
	code, out = h.api(http.MethodGet, "/v1/tenants/ck-b", nil)
	hist, _ := out["history"].([]any)
	if code != http.StatusOK || out["tenant"].(map[string]any)["installed"] != false || len(hist) < 2 || hist[0].(map[string]any)["type"] != "uninstalled" {
		t.Errorf("tenant ck-b = %d %v", code, out)
	}
	if strings.Contains(mustJSON(t, out), secretA) {
		t.Error("the tenant answer holds the shared secret")
	}
	if code, _ := h.api(http.MethodGet, "/v1/tenants/ck-nobody", nil); code != http.StatusNotFound {
		t.Errorf("unknown tenant = %d, want 404", code)
	}
}

func TestAPIUploads_StreamTheDataAndQueueResults(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{data: fakeData{"a1/b2": "the uploaded data"}})
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO migration_transfers (transfer_id, client_key, migration_details, state) VALUES ('tr-1', 'ck-1', '{}', 'ready')`,
		`INSERT INTO migration_uploads (transfer_id, s3_key, label, state) VALUES ('tr-1', 'a1/b2', 'final', 'pending'), ('tr-1', 'gone', '', 'pending'), ('tr-1', 'q', '', 'queued'), ('tr-1', 'busy', '', 'importing')`,
	} {
		if _, err := h.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, h.internalURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+internalToken)
		return h.do(req)
	}
	if code, body := get("/v1/migrations/tr-1/uploads/" + url.PathEscape("a1/b2") + "/data"); code != 200 || body != "the uploaded data" {
		t.Errorf("data = %d %q", code, body)
	}
	for _, p := range []string{"/v1/migrations/tr-1/uploads/nope/data", "/v1/migrations/tr-x/uploads/q/data", "/v1/migrations/tr-1/uploads/gone/data"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Errorf("%s = %d, want 404", p, code)
		}
	}
	result := "/v1/migrations/tr-1/uploads/" + url.PathEscape("a1/b2") + "/result"
	for range 2 {
		if code, out := h.api(http.MethodPost, result, map[string]any{"status": "imported"}); code != http.StatusAccepted {
			t.Fatalf("result = %d %v", code, out)
		}
	}
	if code, out := h.api(http.MethodPost, result, map[string]any{"status": "done"}); code != 400 || out["field"] != "status" {
		t.Errorf("bad status = %d %v", code, out)
	}
	if code, _ := h.api(http.MethodPost, "/v1/migrations/tr-1/uploads/q/result", map[string]any{"status": "imported"}); code != http.StatusConflict {
		t.Errorf("result of a queued upload = %d, want 409", code)
	}
	// A backend may report as soon as it answered 202, before the worker has
	// recorded the hand-over: queued, and the task waits for it.
	if code, out := h.api(http.MethodPost, "/v1/migrations/tr-1/uploads/busy/result", map[string]any{"status": "imported"}); code != http.StatusAccepted {
		t.Errorf("result of an upload being handed over = %d %v, want 202", code, out)
	}
	list := h.tasksIn(tasks.QueueMigration)
	if len(list) != 2 || list[0].Type != tasks.TypeMigrationResult || list[1].Type != tasks.TypeMigrationResult {
		t.Errorf("queued tasks = %v, want two migration:result (a repeated report is one task)", taskTypes(list))
	}
}

func TestAPITenant_AnswersForgeTenantsByInstallationID(t *testing.T) {
	t.Parallel()
	h := apiHarness(t, harnessOpts{forge: true})
	pure := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(), AppVersion: "1.0.0"}
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: pure, body: installedBody(pure, forge.EventInstalled)}); a.status != 204 {
		t.Fatalf("forge installed: %d %s", a.status, a.body)
	}
	code, out := h.api(http.MethodGet, "/v1/tenants/"+url.PathEscape(pure.InstallationID), nil)
	tn, _ := out["tenant"].(map[string]any)
	fi, _ := tn["forge"].(map[string]any)
	if code != http.StatusOK || tn["platform"] != "forge" || fi["installationId"] != pure.InstallationID || tn["installed"] != true {
		t.Errorf("pure Forge tenant = %d %v", code, out)
	}
	if hist, ok := out["history"].([]any); !ok || len(hist) != 1 || hist[0].(map[string]any)["type"] != forge.EventInstalled {
		t.Errorf("pure Forge history = %v, want its installed delivery", out["history"])
	}

	cof := forgetest.Token{InstallationID: forgetest.NewInstallationID(), CloudID: forgetest.NewCloudID(), AppVersion: "1.0.0"}
	body := atlassiantest.InstallBody("ck-cof", site, secretA, appKey)
	body["installationId"] = cof.InstallationID
	if code, b := h.do(h.atl.Request(t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-cof"})); code != http.StatusNoContent {
		t.Fatalf("Connect installed: %d %s", code, b)
	}
	if a := h.forgePost(handlers.PathForgeLifecycle, forgeDelivery{token: cof, body: installedBody(cof, forge.EventUpgraded)}); a.status != 204 {
		t.Fatalf("forge upgraded: %d %s", a.status, a.body)
	}
	for _, id := range []string{"ck-cof", cof.InstallationID} {
		code, out := h.api(http.MethodGet, "/v1/tenants/"+url.PathEscape(id), nil)
		tn, _ := out["tenant"].(map[string]any)
		fi, _ := tn["forge"].(map[string]any)
		hist, _ := out["history"].([]any)
		if code != http.StatusOK || tn["clientKey"] != "ck-cof" || tn["platform"] != "connect-on-forge" || fi["installationId"] != cof.InstallationID ||
			len(hist) != 2 || hist[0].(map[string]any)["type"] != forge.EventUpgraded || hist[1].(map[string]any)["type"] != "installed" {
			t.Errorf("Connect-on-Forge tenant by %s = %d %v", id, code, out)
		}
	}
	if code, _ := h.api(http.MethodGet, "/v1/tenants/"+url.PathEscape(forgetest.NewInstallationID()), nil); code != http.StatusNotFound {
		t.Errorf("unknown installation = %d, want 404", code)
	}
}
