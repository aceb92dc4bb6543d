package handlers_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/tasks"
)

func migrationEvent(eventType, transferID, messageID, jiraClientKey string) map[string]any {
	ev := map[string]any{
		"eventType":   eventType,
		"cloudAppKey": appKey,
		"transferId":  transferID,
		"migrationDetails": map[string]any{
			"migrationId": "mig-1", "migrationScopeId": "scope-1", "name": "Test migration",
			"createdAt": 1702530783417, "jiraClientKey": jiraClientKey, "confluenceClientKey": "unknown",
			"cloudUrl": site,
		},
	}
	if messageID != "" {
		ev["messageId"] = messageID
	}
	if eventType == "app-data-uploaded" {
		ev["s3Key"] = "s3-key-1"
		ev["label"] = "part-1"
	}
	return ev
}

func TestMigrationEvents_AcknowledgesOnceAndDeduplicates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	tests := []struct {
		name   string
		events []map[string]any
		want   int // tasks enqueued
	}{
		{"same messageId five times", repeat(migrationEvent("listener-triggered", "tr-1", "msg-1", "ck-1"), 5), 1},
		{"no messageId, same content twice", repeat(migrationEvent("app-data-uploaded", "tr-2", "", "ck-1"), 2), 1},
		{"unknown event type", repeat(migrationEvent("brand-new-event", "tr-3", "msg-3", "ck-1"), 1), 1},
		{"unknown event type with none of the known fields", repeat(map[string]any{"eventType": "future-event", "messageId": "msg-4"}, 2), 1},
	}
	total := 0
	for _, tt := range tests {
		for i, ev := range tt.events {
			if code, body := h.hs256(handlers.PathMigrationEvents, "ck-1", secretA, ev); code != http.StatusOK {
				t.Fatalf("%s: delivery %d = %d %s, want 200", tt.name, i, code, body)
			}
		}
		total += tt.want
		if got := len(h.tasksIn(tasks.QueueMigration)); got != total {
			t.Errorf("%s: %d migration tasks pending, want %d", tt.name, got, total)
		}
	}
}

func TestMigrationEvents_AnotherTenantCannotPreemptAnEventByItsMessageID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-victim", site, secretA)
	const attackerSecret = "attacker-secret-0123456789abcdef0123456"
	h.install("ck-attacker", "https://attacker.atlassian.net", attackerSecret)
	// The attacker learned the victim's next messageId and sends it first, in an
	// event naming itself (which passes the tenant check).
	if code, _ := h.hs256(handlers.PathMigrationEvents, "ck-attacker", attackerSecret, migrationEvent("listener-triggered", "tr-x", "msg-victim", "ck-attacker")); code != http.StatusOK {
		t.Fatalf("attacker's event = %d", code)
	}
	if code, _ := h.hs256(handlers.PathMigrationEvents, "ck-victim", secretA, migrationEvent("listener-triggered", "tr-v", "msg-victim", "ck-victim")); code != http.StatusOK {
		t.Fatalf("victim's event = %d", code)
	}
	var victims int
	for _, ti := range h.tasksIn(tasks.QueueMigration) {
		if strings.Contains(string(ti.Payload), `"clientKey":"ck-victim"`) {
			victims++
		}
	}
	if victims != 1 {
		t.Errorf("victim's event enqueued %d times, want 1", victims)
	}
}

func TestMigrationEvents_RejectsCrossTenantAndInvalidEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	h.install("ck-2", "https://other.atlassian.net", secretA+"-2")
	noDetails := migrationEvent("listener-triggered", "tr-1", "m", "ck-1")
	delete(noDetails, "migrationDetails")
	noS3Key := migrationEvent("app-data-uploaded", "tr-1", "m", "ck-1")
	delete(noS3Key, "s3Key")
	tests := []struct {
		name string
		body any
		tok  atlassiantest.Token
		want int
	}{
		{"event of another tenant", migrationEvent("listener-triggered", "tr-1", "m1", "ck-2"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusForbidden},
		{"missing migrationDetails", noDetails, atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusBadRequest},
		{"upload without s3Key", noS3Key, atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusBadRequest},
		{"not JSON", "garbage", atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusBadRequest},
		{"context qsh", migrationEvent("listener-triggered", "tr-1", "m2", "ck-1"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA), QSH: "context-qsh"}, http.StatusUnauthorized},
		{"wrong secret", migrationEvent("listener-triggered", "tr-1", "m3", "ck-1"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte("nope")}, http.StatusUnauthorized},
		{"RS256 token", migrationEvent("listener-triggered", "tr-1", "m4", "ck-1"), atlassiantest.Token{Issuer: "ck-1"}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := h.do(h.atl.Request(t, h.baseURL, handlers.PathMigrationEvents, tt.body, tt.tok)); code != tt.want {
				t.Errorf("status = %d %s, want %d", code, body, tt.want)
			}
		})
	}
	if n := len(h.tasksIn(tasks.QueueMigration)); n != 0 {
		t.Errorf("%d migration tasks enqueued by rejected events", n)
	}
}

func TestMigrationEvents_RedisUnreachableAnswers503Fast(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{redisAddr: testenv.ClosedAddr(t)})
	h.seedTenant("ck-1", site, secretA)
	start := time.Now()
	code, _ := h.hs256(handlers.PathMigrationEvents, "ck-1", secretA, migrationEvent("listener-triggered", "tr-1", "m", "ck-1"))
	if code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Errorf("event with Redis down = %d after %s, want 503 within 1s", code, time.Since(start))
	}
}

func TestDescriptor_DeclaresTheServedLifecyclePathsAndSignedInstall(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	resp, err := http.Get(h.baseURL + handlers.PathDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		Key           string            `json:"key"`
		BaseURL       string            `json:"baseUrl"`
		Lifecycle     map[string]string `json:"lifecycle"`
		Scopes        []string          `json:"scopes"`
		APIMigrations map[string]bool   `json:"apiMigrations"`
		Migration     map[string]string `json:"cloudAppMigration"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Key != appKey || d.BaseURL != h.baseURL || !d.APIMigrations["signed-install"] {
		t.Errorf("descriptor = %+v", d)
	}
	for event, path := range map[string]string{"installed": handlers.PathInstalled, "uninstalled": handlers.PathUninstalled, "enabled": handlers.PathEnabled, "disabled": handlers.PathDisabled} {
		if d.Lifecycle[event] != path {
			t.Errorf("lifecycle.%s = %q, want %q", event, d.Lifecycle[event], path)
		}
	}
	if d.Migration["migrationWebhookPath"] != handlers.PathMigrationEvents {
		t.Errorf("migrationWebhookPath = %q", d.Migration["migrationWebhookPath"])
	}
	if strings.Join(d.Scopes, ",") != "READ,WRITE" {
		t.Errorf("scopes = %v", d.Scopes)
	}
}

func TestDescriptor_VendorHookAddsModulesButCannotBreakTheProtocolParts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{descriptor: func(d map[string]any) {
		d["modules"] = map[string]any{"generalPages": []any{map[string]any{"key": "hello", "url": "/hello"}}}
		d["key"], d["baseUrl"] = "someone-else", "https://elsewhere.example.com"
		d["lifecycle"] = map[string]any{"installed": "/mine"}
		d["apiMigrations"] = map[string]any{"signed-install": false, "gdpr": true}
	}})
	resp, err := http.Get(h.baseURL + handlers.PathDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d["key"] != appKey || d["baseUrl"] != h.baseURL {
		t.Errorf("key/baseUrl = %v/%v, want the configured ones", d["key"], d["baseUrl"])
	}
	if d["lifecycle"].(map[string]any)["installed"] != handlers.PathInstalled {
		t.Errorf("lifecycle = %v", d["lifecycle"])
	}
	mig := d["apiMigrations"].(map[string]any)
	if mig["signed-install"] != true || mig["gdpr"] != true {
		t.Errorf("apiMigrations = %v, want signed-install forced on and the vendor's gdpr kept", mig)
	}
	if _, ok := d["modules"].(map[string]any)["generalPages"]; !ok {
		t.Errorf("vendor modules lost: %v", d["modules"])
	}
}

func TestDescriptor_ServesTheVendorsFileMergedWithTheOwnedMembers(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "descriptor.json")
	body := `{"name":"Acme for Jira","scopes":["READ","ACT_AS_USER"],"vendor":{"name":"Acme"},
		"modules":{"jiraIssueContents":[{"key":"acme-panel","url":"/panel?issue={issue.key}"}],"webhooks":[{"event":"jira:issue_created","url":"/hooks/issue"}]},
		"apiMigrations":{"gdpr":true,"context-qsh":true},"cloudAppMigration":{"vendorExtra":1},
		"lifecycle":{"installed":"/installed"}}`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{descriptorFile: file})
	resp, err := http.Get(h.baseURL + handlers.PathDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	modules := d["modules"].(map[string]any)
	if d["name"] != "Acme for Jira" || modules["jiraIssueContents"] == nil || modules["webhooks"] == nil ||
		d["vendor"].(map[string]any)["name"] != "Acme" || fmt.Sprint(d["scopes"]) != "[READ ACT_AS_USER]" {
		t.Errorf("the vendor's members are not served: %v", d)
	}
	if d["key"] != appKey || d["baseUrl"] != h.baseURL || d["lifecycle"].(map[string]any)["uninstalled"] != handlers.PathUninstalled {
		t.Errorf("owned members: %v", d)
	}
	mig := d["apiMigrations"].(map[string]any)
	cam := d["cloudAppMigration"].(map[string]any)
	if mig["signed-install"] != true || mig["gdpr"] != true || mig["context-qsh"] != true ||
		cam["migrationWebhookPath"] != handlers.PathMigrationEvents || cam["vendorExtra"] == nil {
		t.Errorf("apiMigrations %v, cloudAppMigration %v: want ours and the vendor's members", mig, cam)
	}
}

func TestMetrics_MethodLabelIsBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, m := range []string{"BREW", "XYZZY", "GET"} {
		req, _ := http.NewRequest(m, h.baseURL+handlers.PathHealth, nil)
		h.do(req)
	}
	resp, err := http.Get(h.internalURL + handlers.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "BREW") || strings.Contains(string(b), "XYZZY") {
		t.Errorf("client-chosen methods became metric labels")
	}
	if !strings.Contains(string(b), `method="OTHER"`) {
		t.Errorf("unknown methods not counted as OTHER")
	}
}

func TestHealth_ReadyReportsEachDependency(t *testing.T) {
	t.Parallel()
	up := newHarness(t, harnessOpts{})
	down := newHarness(t, harnessOpts{redisAddr: testenv.ClosedAddr(t), databaseURL: "postgres://postgres@" + testenv.ClosedAddr(t) + "/postgres?sslmode=disable"})
	tests := []struct {
		name string
		h    *harness
		path string
		want int
		body string
	}{
		{"healthz up", up, handlers.PathHealth, 200, `"ok"`},
		{"readyz up", up, handlers.PathReady, 200, `"postgres":"ok"`},
		{"healthz with dependencies down", down, handlers.PathHealth, 200, `"ok"`},
		{"readyz with dependencies down", down, handlers.PathReady, 503, `"redis":"unavailable"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			resp, err := http.Get(tt.h.baseURL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.body) {
				t.Errorf("%s = %d %s, want %d containing %s", tt.path, resp.StatusCode, b, tt.want, tt.body)
			}
			if time.Since(start) > time.Second {
				t.Errorf("%s took %s", tt.path, time.Since(start))
			}
		})
	}
}

func TestMetrics_ExposeTheInstallSLI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for i := range 3 {
		h.install(fmt.Sprintf("ck-%d", i), site, secretA)
	}
	h.do(h.atl.Request(t, h.baseURL, handlers.PathInstalled, atlassiantest.InstallBody("ck-x", site, secretA, appKey), atlassiantest.Token{Alg: "none-at-all"}))
	resp, err := http.Get(h.internalURL + handlers.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`connectrelay_install_callback_sli_total{result="good"} 3`,
		`connectrelay_install_callback_sli_total{result="bad"} 1`,
		`connectrelay_lifecycle_callbacks_total{event="installed",outcome="unauthorized"} 1`,
		`connectrelay_http_request_duration_seconds_count{code="204",method="POST",route="/installed"} 3`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestMonitoring_RequiresTheAdminToken(t *testing.T) {
	t.Parallel()
	const token = "admin-token-0123456789abcdef"
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "asynq ui at "+r.URL.Path) })
	h := newHarness(t, harnessOpts{adminToken: token, monitoring: ui})
	bare := newHarness(t, harnessOpts{monitoring: ui})
	tests := []struct {
		name string
		h    *harness
		set  func(r *http.Request)
		want int
	}{
		{"no credentials", h, func(*http.Request) {}, 401},
		{"wrong bearer", h, func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, 401},
		{"token prefix only", h, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token[:10]) }, 401},
		{"bearer token", h, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, 200},
		{"basic auth password", h, func(r *http.Request) { r.SetBasicAuth("ops", token) }, 200},
		{"no ADMIN_TOKEN configured", bare, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, 404},
	}
	for _, tt := range tests {
		for _, path := range []string{handlers.PathMonitoring, handlers.PathMonitoring + "/queues/default"} {
			req, _ := http.NewRequest(http.MethodGet, tt.h.internalURL+path, nil)
			tt.set(req)
			if code, body := tt.h.do(req); code != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.name, path, code, body, tt.want)
			}
		}
	}
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestMigrationEvents_LogOneLinePerRequestNamingTheEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	for range 2 {
		if code, body := h.hs256(handlers.PathMigrationEvents, "ck-1", secretA, migrationEvent("listener-triggered", "tr-log", "msg-log", "ck-1")); code != http.StatusOK {
			t.Fatalf("delivery = %d %s, want 200", code, body)
		}
	}
	type rec struct {
		Msg        string `json:"msg"`
		Route      string `json:"route"`
		Status     int    `json:"status"`
		ClientKey  string `json:"client_key"`
		EventType  string `json:"event_type"`
		TransferID string `json:"transfer_id"`
		DedupeKey  string `json:"dedupe_key"`
		Duplicate  bool   `json:"duplicate"`
	}
	var got []rec
	for _, line := range h.logs.Lines() {
		var r rec
		if json.Unmarshal([]byte(line), &r) == nil && (r.Route == handlers.PathMigrationEvents || r.TransferID != "") {
			got = append(got, r)
		}
	}
	want := []rec{
		{"http request", handlers.PathMigrationEvents, 200, "ck-1", "listener-triggered", "tr-log", "msg:msg-log", false},
		{"http request", handlers.PathMigrationEvents, 200, "ck-1", "listener-triggered", "tr-log", "msg:msg-log", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines of two deliveries (-want +got):\n%s", diff)
	}
}
