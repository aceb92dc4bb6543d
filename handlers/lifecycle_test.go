package handlers_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/tasks"
)

const (
	site    = "https://acme.atlassian.net"
	secretA = "secret-A-0123456789abcdef0123456789abcdef"
)

func TestInstalled_StoresTenantAndEnqueuesInitWithoutSecret(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if code, body := h.install("ck-1", site, secretA); code != http.StatusNoContent {
		t.Fatalf("installed = %d %s, want 204", code, body)
	}
	tn, err := h.store.Get(context.Background(), "ck-1")
	if err != nil {
		t.Fatalf("tenant not stored: %v", err)
	}
	if tn.BaseURL != site || !tn.Installed || tn.PluginsVersion != "1001.0.0-SNAPSHOT" {
		t.Errorf("stored tenant = %+v", tn)
	}
	got, err := h.store.SharedSecret(context.Background(), "ck-1")
	if err != nil || string(got) != secretA {
		t.Errorf("stored secret = %q, %v", got, err)
	}
	pending := h.tasksIn(tasks.QueueLifecycle)
	if len(pending) != 1 || pending[0].Type != tasks.TypeTenantInit {
		t.Fatalf("pending lifecycle tasks = %v, want one %s", pending, tasks.TypeTenantInit)
	}
	if strings.Contains(string(pending[0].Payload), secretA) {
		t.Errorf("task payload carries the shared secret: %s", pending[0].Payload)
	}
	if p := decodePayload(t, pending[0]); p.ClientKey != "ck-1" || p.EventID == 0 {
		t.Errorf("payload = %+v", p)
	}
}

func TestInstalled_RepeatedDeliveryIsIdempotent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for i := range 3 {
		if code, body := h.install("ck-1", site, secretA); code != http.StatusNoContent {
			t.Fatalf("install %d = %d %s", i, code, body)
		}
	}
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM tenants`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tenants = %d (%v), want 1", n, err)
	}
	hist, err := h.store.History(context.Background(), "ck-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		for _, c := range e.Changes {
			if strings.Contains(c, "rotated") || strings.Contains(c, "->") {
				t.Errorf("history claims a change that did not happen: %q", c)
			}
		}
	}
}

func TestInstalled_SecretRotationRetiresTheOldSecret(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	if code, _ := h.hs256(handlers.PathEnabled, "ck-1", secretA, lifecycleBody("ck-1", site, "enabled")); code != http.StatusNoContent {
		t.Fatalf("enabled with the first secret = %d", code)
	}
	const secretB = "secret-B-rotated-0123456789abcdef012345"
	if code, body := h.installAt("ck-1", site, secretB, time.Now().Add(time.Second)); code != http.StatusNoContent {
		t.Fatalf("rotation install = %d %s", code, body)
	}
	if code, _ := h.hs256(handlers.PathEnabled, "ck-1", secretB, lifecycleBody("ck-1", site, "enabled")); code != http.StatusNoContent {
		t.Errorf("enabled with the new secret = %d, want 204", code)
	}
	if code, _ := h.hs256(handlers.PathEnabled, "ck-1", secretA, lifecycleBody("ck-1", site, "enabled")); code != http.StatusUnauthorized {
		t.Errorf("enabled with the rotated-away secret = %d, want 401", code)
	}
	if !historyMentions(t, h, "ck-1", "secret rotated") {
		t.Errorf("history does not record the rotation")
	}
}

func TestInstalled_SiteRenameUpdatesBaseURLAndHistory(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	const renamed = "https://acme-renamed.atlassian.net"
	if code, body := h.installAt("ck-1", renamed, secretA, time.Now().Add(time.Second)); code != http.StatusNoContent {
		t.Fatalf("rename install = %d %s", code, body)
	}
	tn, err := h.store.Get(context.Background(), "ck-1")
	if err != nil || tn.BaseURL != renamed {
		t.Fatalf("baseUrl after rename = %q (%v)", tn.BaseURL, err)
	}
	if !historyMentions(t, h, "ck-1", site) || !historyMentions(t, h, "ck-1", renamed) {
		t.Errorf("history does not show %s -> %s", site, renamed)
	}
}

func TestInstalled_SiteImportKeepsBothTenantsAndRecordsTheLink(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-old", site, secretA)
	before := h.tenantRow("ck-old")
	const secretNew = "secret-new-site-import-0123456789abcdef"
	if code, body := h.install("ck-new", site, secretNew); code != http.StatusNoContent {
		t.Fatalf("import install = %d %s", code, body)
	}
	if after := h.tenantRow("ck-old"); after != before {
		t.Errorf("old tenant changed by the import:\nbefore %s\nafter  %s", before, after)
	}
	links, err := h.store.Links(context.Background(), "ck-new")
	if err != nil || len(links) == 0 {
		t.Fatalf("links of ck-new = %v (%v), want the link to ck-old", links, err)
	}
	if !historyMentions(t, h, "ck-new", "ck-old") {
		t.Errorf("history of ck-new does not name ck-old")
	}
	tests := []struct {
		clientKey, secret string
		want              int
	}{
		{"ck-old", secretA, http.StatusNoContent},
		{"ck-new", secretNew, http.StatusNoContent},
		{"ck-old", secretNew, http.StatusUnauthorized},
		{"ck-new", secretA, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		if code, _ := h.hs256(handlers.PathEnabled, tt.clientKey, tt.secret, lifecycleBody(tt.clientKey, site, "enabled")); code != tt.want {
			t.Errorf("enabled as %s with %s's secret = %d, want %d", tt.clientKey, tt.secret[:10], code, tt.want)
		}
	}
}

func TestUninstalled_KeepsSecretSoALateDisabledVerifies(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	h.hs256(handlers.PathEnabled, "ck-1", secretA, lifecycleBody("ck-1", site, "enabled"))
	req := h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody("ck-1", site, "uninstalled"), atlassiantest.Token{Issuer: "ck-1"})
	if code, body := h.do(req); code != http.StatusNoContent {
		t.Fatalf("uninstalled = %d %s", code, body)
	}
	if code, body := h.hs256(handlers.PathDisabled, "ck-1", secretA, lifecycleBody("ck-1", site, "disabled")); code != http.StatusNoContent {
		t.Fatalf("late disabled = %d %s, want 204", code, body)
	}
	tn, _ := h.store.Get(context.Background(), "ck-1")
	if tn.Installed || tn.Enabled {
		t.Errorf("after uninstall: installed=%v enabled=%v", tn.Installed, tn.Enabled)
	}
	if code, _ := h.installAt("ck-1", site, secretA, time.Now().Add(time.Second)); code != http.StatusNoContent {
		t.Fatalf("reinstall = %d", code)
	}
	tn, _ = h.store.Get(context.Background(), "ck-1")
	if !tn.Installed {
		t.Errorf("reinstall did not mark the tenant installed")
	}
	if !historyMentions(t, h, "ck-1", "reinstalled") {
		t.Errorf("history does not record the reinstall")
	}
	types := taskTypes(h.tasksIn(tasks.QueueLifecycle))
	for _, want := range []string{tasks.TypeTenantInit, tasks.TypeTenantEnabled} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s task enqueued; have %v", want, types)
		}
	}
	// Every change reaches the vendor through the event feed, recorded with it
	// (the late disabled changed nothing: the uninstall had disabled the tenant).
	var events []string
	rows, err := h.pool.Query(context.Background(), `SELECT type FROM event_outbox WHERE client_key = 'ck-1' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	events, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tenant.installed", "tenant.enabled", "tenant.uninstalled", "tenant.updated"} {
		if !slices.Contains(events, want) {
			t.Errorf("no %s event recorded; have %v", want, events)
		}
	}
}

func TestUninstalled_UnknownTenantIsAcknowledged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	req := h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody("ck-never", site, "uninstalled"), atlassiantest.Token{Issuer: "ck-never"})
	if code, body := h.do(req); code != http.StatusNoContent {
		t.Fatalf("uninstalled for unknown tenant = %d %s, want 204", code, body)
	}
}

func TestDisabledAndUninstalled_RaceLeavesAConsistentTenant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for round := range 5 {
		ck := fmt.Sprintf("ck-race-%d", round)
		h.install(ck, site, secretA)
		h.hs256(handlers.PathEnabled, ck, secretA, lifecycleBody(ck, site, "enabled"))
		var wg sync.WaitGroup
		codes := make([]int, 2)
		wg.Add(2)
		go func() {
			defer wg.Done()
			codes[0], _ = h.hs256(handlers.PathDisabled, ck, secretA, lifecycleBody(ck, site, "disabled"))
		}()
		go func() {
			defer wg.Done()
			req := h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody(ck, site, "uninstalled"), atlassiantest.Token{Issuer: ck})
			codes[1], _ = h.do(req)
		}()
		wg.Wait()
		if codes[0] != http.StatusNoContent || codes[1] != http.StatusNoContent {
			t.Fatalf("round %d: disabled=%d uninstalled=%d, want both 204", round, codes[0], codes[1])
		}
		tn, err := h.store.Get(context.Background(), ck)
		if err != nil || tn.Installed || tn.Enabled {
			t.Errorf("round %d: tenant after race installed=%v enabled=%v (%v)", round, tn.Installed, tn.Enabled, err)
		}
	}
}

func TestInstalled_ConcurrentDuplicatesLeaveOneConsistentTenant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	var wg sync.WaitGroup
	codes := make([]int, 10)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = h.install("ck-dup", site, secretA)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusNoContent {
			t.Errorf("delivery %d = %d", i, c)
		}
	}
	if got, err := h.store.SharedSecret(context.Background(), "ck-dup"); err != nil || string(got) != secretA {
		t.Errorf("secret after concurrent installs = %q, %v", got, err)
	}
}

func TestInstalled_RejectsHijackAttemptsAndLeavesTheVictimUntouched(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("victim", site, secretA)
	before := h.tenantRow("victim")
	const attackerSecret = "attacker-secret-0123456789abcdef01234567"
	hijack := atlassiantest.InstallBody("victim", site, attackerSecret, appKey)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	h.install("attacker", "https://evil.atlassian.net", "attacker-own-secret-0123456789abcdef0")
	tests := []struct {
		name string
		body map[string]any
		tok  atlassiantest.Token
		want int
	}{
		{"unsigned", hijack, atlassiantest.Token{Alg: "none-at-all"}, http.StatusUnauthorized},
		{"alg none", hijack, atlassiantest.Token{Alg: "none", Issuer: "victim"}, http.StatusUnauthorized},
		{"HS256 with the victim's current secret", hijack, atlassiantest.Token{Alg: "HS256", Issuer: "victim", Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"HS256 signed with the public key PEM", hijack, atlassiantest.Token{Alg: "HS256", Issuer: "victim", SignWith: h.atl.PublicKeyPEM(t)}, http.StatusUnauthorized},
		{"RS256 from an unknown key", hijack, atlassiantest.Token{Issuer: "victim", SignWith: otherKey}, http.StatusUnauthorized},
		{"RS256 with an unknown kid", hijack, atlassiantest.Token{Issuer: "victim", KID: "no-such-key"}, http.StatusUnauthorized},
		{"kid path traversal", hijack, atlassiantest.Token{Issuer: "victim", KID: "../" + atlassiantest.KID}, http.StatusUnauthorized},
		{"genuine token of another tenant", hijack, atlassiantest.Token{Issuer: "attacker"}, http.StatusUnauthorized},
		{"expired", hijack, atlassiantest.Token{Issuer: "victim", IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}, http.StatusUnauthorized},
		{"wrong audience", hijack, atlassiantest.Token{Issuer: "victim", Audience: "https://other-app.example.com"}, http.StatusUnauthorized},
		{"context qsh", hijack, atlassiantest.Token{Issuer: "victim", QSH: "context-qsh"}, http.StatusUnauthorized},
		{"qsh of another path", hijack, atlassiantest.Token{Issuer: "victim", QSH: "8a8d06f040b246544d605b08aeb419e30b5cf0e200f512888486585ecce6a52e"}, http.StatusUnauthorized},
		{"foreign product host", atlassiantest.InstallBody("victim", "https://evil.example.com", attackerSecret, appKey), atlassiantest.Token{Issuer: "victim"}, http.StatusBadRequest},
		{"http product host", atlassiantest.InstallBody("victim", "http://acme.atlassian.net", attackerSecret, appKey), atlassiantest.Token{Issuer: "victim"}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := h.atl.Request(t, h.baseURL, handlers.PathInstalled, tt.body, tt.tok)
			code, body := h.do(req)
			if code != tt.want {
				t.Errorf("status = %d %s, want %d", code, body, tt.want)
			}
			if after := h.tenantRow("victim"); after != before {
				t.Errorf("victim's record changed:\nbefore %s\nafter  %s", before, after)
			}
			if got, _ := h.store.SharedSecret(context.Background(), "victim"); string(got) != secretA {
				t.Errorf("victim's secret changed")
			}
		})
	}
}

func TestLifecycle_RejectsMalformedInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-1", site, secretA)
	big := strings.Repeat("x", handlers.DefaultBodyLimit+1)
	tests := []struct {
		name string
		path string
		body any
		tok  atlassiantest.Token
		want int
	}{
		{"installed not JSON", handlers.PathInstalled, "{not json", atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"installed JSON array", handlers.PathInstalled, "[1,2]", atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"installed without clientKey", handlers.PathInstalled, map[string]any{"baseUrl": site, "sharedSecret": "s", "key": appKey}, atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"installed without baseUrl", handlers.PathInstalled, map[string]any{"clientKey": "ck-1", "sharedSecret": "s", "key": appKey}, atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"installed with wrong eventType", handlers.PathInstalled, func() map[string]any {
			b := atlassiantest.InstallBody("ck-1", site, secretA, appKey)
			b["eventType"] = "uninstalled"
			return b
		}(), atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"installed too large", handlers.PathInstalled, `{"x":"` + big + `"}`, atlassiantest.Token{Issuer: "ck-1"}, http.StatusRequestEntityTooLarge},
		{"uninstalled not JSON", handlers.PathUninstalled, "nope", atlassiantest.Token{Issuer: "ck-1"}, http.StatusBadRequest},
		{"enabled not JSON", handlers.PathEnabled, "nope", atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusBadRequest},
		{"enabled body names another tenant", handlers.PathEnabled, lifecycleBody("ck-other", site, "enabled"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"enabled by an issuer with a NUL byte", handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), atlassiantest.Token{Alg: "HS256", Issuer: "ck\x00-1", Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"enabled by an issuer with a newline", handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-1\n", Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"enabled by an issuer of 10 KB", handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), atlassiantest.Token{Alg: "HS256", Issuer: strings.Repeat("k", 10<<10), Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"enabled by unknown tenant", handlers.PathEnabled, lifecycleBody("ck-unknown", site, "enabled"), atlassiantest.Token{Alg: "HS256", Issuer: "ck-unknown", Secret: []byte(secretA)}, http.StatusUnauthorized},
		{"enabled without token", handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), atlassiantest.Token{Alg: "none-at-all"}, http.StatusUnauthorized},
		{"disabled with RS256", handlers.PathDisabled, lifecycleBody("ck-1", site, "disabled"), atlassiantest.Token{Issuer: "ck-1"}, http.StatusUnauthorized},
		{"enabled too large", handlers.PathEnabled, `{"x":"` + big + `"}`, atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := h.do(h.atl.Request(t, h.baseURL, tt.path, tt.body, tt.tok))
			if code != tt.want {
				t.Errorf("status = %d %s, want %d", code, body, tt.want)
			}
		})
	}
}

func TestInstalled_PostgresUnreachableAnswers503WithinASecond(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{databaseURL: "postgres://postgres@" + testenv.ClosedAddr(t) + "/postgres?sslmode=disable&connect_timeout=1"})
	start := time.Now()
	code, body := h.install("ck-1", site, secretA)
	if code != http.StatusServiceUnavailable {
		t.Errorf("installed with Postgres down = %d %s, want 503", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("503 took %s, want < 1s", d)
	}
	start = time.Now()
	code, _ = h.hs256(handlers.PathEnabled, "ck-1", secretA, lifecycleBody("ck-1", site, "enabled"))
	if code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Errorf("enabled with Postgres down = %d after %s, want 503 within 1s", code, time.Since(start))
	}
}

func TestInstalled_RedisUnreachableAnswers503WithinASecond(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{redisAddr: testenv.ClosedAddr(t)})
	start := time.Now()
	code, body := h.install("ck-1", site, secretA)
	if code != http.StatusServiceUnavailable {
		t.Errorf("installed with Redis down = %d %s, want 503", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("503 took %s, want < 1s", d)
	}
	// The token could not be bound to its body, so nothing was stored: an
	// install is never accepted unchecked, and Atlassian's retry stores it
	// once Redis is back.
	if got, err := h.store.SharedSecret(context.Background(), "ck-1"); !errors.Is(err, tenant.ErrNotFound) {
		t.Errorf("secret after 503 = %q, %v; want none stored", got, err)
	}
}

func TestInstalled_KeyServerUnavailableAnswers503(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{keyServer: "http://" + testenv.ClosedAddr(t)})
	start := time.Now()
	if code, body := h.install("ck-1", site, secretA); code != http.StatusServiceUnavailable {
		t.Errorf("installed with the key server down = %d %s, want 503", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("503 took %s, want < 1s", d)
	}
}

func TestSecrets_NeverReachTheDatabaseOrTheLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	const marker = "plaintext-marker-secret-7f3a9c0e5b1d"
	h.install("ck-1", site, marker)
	h.install("ck-1", "https://renamed.atlassian.net", marker+"-2")
	h.hs256(handlers.PathEnabled, "ck-1", marker+"-2", lifecycleBody("ck-1", site, "enabled"))
	h.hs256(handlers.PathEnabled, "ck-1", marker, lifecycleBody("ck-1", site, "enabled")) // a 401, logged
	rows, err := h.pool.Query(context.Background(), `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) < 3 {
		t.Fatalf("found only tables %v", tables)
	}
	for _, tbl := range tables {
		var dump string
		err := h.pool.QueryRow(context.Background(), fmt.Sprintf(`SELECT coalesce(string_agg(row_to_json(t)::text, E'\n'), '') FROM %q t`, tbl)).Scan(&dump)
		if err != nil {
			t.Fatalf("dump %s: %v", tbl, err)
		}
		if strings.Contains(dump, marker) {
			t.Errorf("table %s contains the plaintext secret", tbl)
		}
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "http request") || !strings.Contains(logs, "changes") {
		t.Fatalf("captured no logs; the check below would be vacuous")
	}
	if strings.Contains(logs, marker) {
		t.Errorf("logs contain the plaintext secret")
	}
	if strings.Contains(logs, "eyJ") {
		t.Errorf("logs contain something JWT-shaped")
	}
	for _, ti := range h.tasksIn(tasks.QueueLifecycle) {
		if strings.Contains(string(ti.Payload), marker) {
			t.Errorf("task payload contains the secret")
		}
	}
}

func historyMentions(t *testing.T, h *harness, clientKey, needle string) bool {
	t.Helper()
	hist, err := h.store.History(context.Background(), clientKey, 100)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	for _, e := range hist {
		for _, c := range e.Changes {
			if strings.Contains(c, needle) {
				return true
			}
		}
	}
	return false
}

func taskTypes(list []*asynq.TaskInfo) []string {
	var out []string
	for _, ti := range list {
		out = append(out, ti.Type)
	}
	return out
}

func TestLifecycle_HungDependenciesAnswer503WithinASecond(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{viaProxies: true})
	h.install("ck-cached", site, secretA)
	h.install("ck-cold", site, secretA)
	// ck-cached's secret is now in the receiver's cache; ck-cold's is not.
	if code, _ := h.hs256(handlers.PathEnabled, "ck-cached", secretA, lifecycleBody("ck-cached", site, "enabled")); code != http.StatusNoContent {
		t.Fatalf("enabled before the fault = %d", code)
	}
	tests := []struct {
		name   string
		freeze func()
		send   func() (int, string)
	}{
		{"postgres hangs, secret cached", h.pgProxy.Freeze, func() (int, string) {
			return h.hs256(handlers.PathDisabled, "ck-cached", secretA, lifecycleBody("ck-cached", site, "disabled"))
		}},
		{"postgres hangs, secret lookup", h.pgProxy.Freeze, func() (int, string) {
			return h.hs256(handlers.PathEnabled, "ck-cold", secretA, lifecycleBody("ck-cold", site, "enabled"))
		}},
		{"postgres hangs, install", h.pgProxy.Freeze, func() (int, string) { return h.install("ck-new", site, secretA) }},
		{"postgres hangs, migration event", h.pgProxy.Freeze, func() (int, string) {
			return h.hs256(handlers.PathMigrationEvents, "ck-cold", secretA, migrationEvent("listener-triggered", "tr-1", "m-1", "ck-cold"))
		}},
		{"redis hangs, migration event", h.redisProxy.Freeze, func() (int, string) {
			return h.hs256(handlers.PathMigrationEvents, "ck-cached", secretA, migrationEvent("listener-triggered", "tr-1", "m-2", "ck-cached"))
		}},
		{"redis hangs, install", h.redisProxy.Freeze, func() (int, string) { return h.install("ck-cached", site, secretA) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.freeze()
			defer h.pgProxy.Thaw()
			defer h.redisProxy.Thaw()
			start := time.Now()
			code, body := tt.send()
			if code != http.StatusServiceUnavailable {
				t.Errorf("status = %d %s, want 503", code, body)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("503 took %s, want < 1s", d)
			}
		})
	}
	// Nothing was lost: once the dependencies answer again, so does the receiver.
	if code, body := h.hs256(handlers.PathEnabled, "ck-cold", secretA, lifecycleBody("ck-cold", site, "enabled")); code != http.StatusNoContent {
		t.Errorf("enabled after recovery = %d %s", code, body)
	}
}

// TestInstalled_FreshKidsOverTheKeyFetchBudgetAnswer503 checks the handler's
// side of the key-fetch budget: an install whose kid is in no cache once the
// budget is spent is answered 503 (Atlassian retries) without a key server
// request, while the genuine, cached key still installs.
func TestInstalled_FreshKidsOverTheKeyFetchBudgetAnswer503(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{keyFetchBurst: 2})
	if code, body := h.install("ck-genuine", site, secretA); code != http.StatusNoContent {
		t.Fatalf("genuine install = %d %s", code, body)
	}
	send := func(kid string) (int, string) {
		body := atlassiantest.InstallBody("ck-flood", site, "flood-secret-0123456789abcdef0123456789", appKey)
		return h.do(h.atl.Request(t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-flood", KID: kid}))
	}
	if code, body := send("fresh-kid-1"); code != http.StatusUnauthorized {
		t.Errorf("first fresh kid (within the budget) = %d %s, want 401", code, body)
	}
	for _, kid := range []string{"fresh-kid-2", "fresh-kid-3"} {
		if code, body := send(kid); code != http.StatusServiceUnavailable {
			t.Errorf("fresh kid %s over the budget = %d %s, want 503", kid, code, body)
		}
	}
	if code, body := h.installAt("ck-genuine", site, "rotated-secret-0123456789abcdef01234567", time.Now().Add(time.Second)); code != http.StatusNoContent {
		t.Errorf("genuine install after the flood = %d %s, want 204", code, body)
	}
}

// TestInstalled_RefusesAnotherAppsKey: the install body's key must be
// CONNECT_APP_KEY; an install for another app is refused with 400 naming the
// field, and nothing is stored.
func TestInstalled_RefusesAnotherAppsKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, key := range []string{"com.example.other-app", strings.ToUpper(appKey), appKey + " "} {
		body := atlassiantest.InstallBody("ck-other-app", site, secretA, key)
		code, resp := h.do(h.atl.Request(t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-other-app"}))
		if code != http.StatusBadRequest || !strings.Contains(resp, `"field":"key"`) {
			t.Errorf("install with key %q = %d %s, want 400 naming the field key", key, code, resp)
		}
	}
	if _, err := h.store.Get(context.Background(), "ck-other-app"); !errors.Is(err, tenant.ErrNotFound) {
		t.Errorf("tenant of another app's install was stored (err %v)", err)
	}
}

// TestEnabled_NewTenantVerifiesAtOnceAfterAnUnknownIssuerWasRemembered: the
// receiver remembers unknown issuers briefly (no query per request), and an
// install on this receiver must make the new tenant verify at once.
func TestEnabled_NewTenantVerifiesAtOnceAfterAnUnknownIssuerWasRemembered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for range 3 {
		if code, body := h.hs256(handlers.PathEnabled, "ck-new", secretA, lifecycleBody("ck-new", site, "enabled")); code != http.StatusUnauthorized {
			t.Fatalf("enabled before install = %d %s, want 401", code, body)
		}
	}
	if code, body := h.install("ck-new", site, secretA); code != http.StatusNoContent {
		t.Fatalf("installed = %d %s", code, body)
	}
	if code, body := h.hs256(handlers.PathEnabled, "ck-new", secretA, lifecycleBody("ck-new", site, "enabled")); code != http.StatusNoContent {
		t.Errorf("enabled right after install = %d %s, want 204", code, body)
	}
}

// TestInstalled_RefusesAKeyEnvironmentChangeOfAnExistingTenant: with staging
// hosts opted in, a genuinely signed install whose baseUrl moves a production
// tenant to a staging host (so its key came from the staging CDN) is refused
// with 401 and a log line, and the tenant is untouched.
func TestInstalled_RefusesAKeyEnvironmentChangeOfAnExistingTenant(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{productHosts: []string{"*.atlassian.net", "*.jira.com", "*.jira-dev.com"}})
	if code, body := h.install("ck-prod", site, secretA); code != http.StatusNoContent {
		t.Fatalf("production install = %d %s", code, body)
	}
	before := h.tenantRow("ck-prod")
	if code, body := h.installAt("ck-prod", "https://acme.jira-dev.com", "staging-secret-0123456789abcdef0123456", time.Now().Add(time.Second)); code != http.StatusUnauthorized {
		t.Errorf("staging install of a production tenant = %d %s, want 401", code, body)
	}
	if after := h.tenantRow("ck-prod"); after != before {
		t.Errorf("tenant changed:\nbefore %s\nafter  %s", before, after)
	}
	if !strings.Contains(h.logs.String(), "key environment") {
		t.Errorf("no log line names the key environment:\n%s", h.logs.String())
	}
	// A new staging tenant installs (staging is opted in here).
	if code, body := h.install("ck-staging", "https://acme.jira-dev.com", secretA); code != http.StatusNoContent {
		t.Errorf("new staging tenant = %d %s, want 204", code, body)
	}
}

// TestUninstalled_RefusesAKeyEnvironmentOtherThanTheTenants: a genuinely
// signed uninstalled whose baseUrl is a staging host (its key from the
// staging CDN) does not uninstall a production tenant.
func TestUninstalled_RefusesAKeyEnvironmentOtherThanTheTenants(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{productHosts: []string{"*.atlassian.net", "*.jira.com", "*.jira-dev.com"}})
	if code, body := h.install("ck-prod", site, secretA); code != http.StatusNoContent {
		t.Fatalf("production install = %d %s", code, body)
	}
	before := h.tenantRow("ck-prod")
	req := h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody("ck-prod", "https://acme.jira-dev.com", "uninstalled"),
		atlassiantest.Token{Issuer: "ck-prod", IssuedAt: time.Now().Add(time.Second)})
	if code, body := h.do(req); code != http.StatusUnauthorized {
		t.Errorf("staging-signed uninstalled of a production tenant = %d %s, want 401", code, body)
	}
	if after := h.tenantRow("ck-prod"); after != before {
		t.Errorf("tenant changed:\nbefore %s\nafter  %s", before, after)
	}
	req = h.atl.Request(t, h.baseURL, handlers.PathUninstalled, lifecycleBody("ck-prod", site, "uninstalled"),
		atlassiantest.Token{Issuer: "ck-prod", IssuedAt: time.Now().Add(2 * time.Second)})
	if code, body := h.do(req); code != http.StatusNoContent {
		t.Errorf("production uninstalled = %d %s, want 204", code, body)
	}
}

func TestEnabled_RequestLogLineNamesTheTenantAndItsHistoryRow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.install("ck-log", site, secretA)
	if code, body := h.hs256(handlers.PathEnabled, "ck-log", secretA, lifecycleBody("ck-log", site, "enabled")); code != http.StatusNoContent {
		t.Fatalf("enabled = %d %s, want 204", code, body)
	}
	var lines []string
	for _, line := range h.logs.Lines() {
		var rec struct {
			Msg       string `json:"msg"`
			Route     string `json:"route"`
			ClientKey string `json:"client_key"`
			EventID   int64  `json:"event_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Route == handlers.PathEnabled {
			if rec.Msg != "http request" || rec.ClientKey != "ck-log" || rec.EventID == 0 {
				t.Errorf("request line %s: want client_key ck-log and an event_id", line)
			}
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 {
		t.Errorf("%d request lines for /enabled, want 1", len(lines))
	}
}
