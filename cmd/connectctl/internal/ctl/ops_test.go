package ctl

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// opsEnv is a migrated database of the test's own, a tenant store over it and
// the environment connectctl runs with.
type opsEnv struct {
	pool  *pgxpool.Pool
	key   []byte
	box   *tenant.SecretBox
	store *tenant.Store
	env   map[string]string
	// base is a whole second 100 h ago: the seeds' clock.
	base time.Time
}

func newSecretKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, tenant.SecretKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func setupOps(t *testing.T) *opsEnv {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pool, err := schema.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	key := newSecretKey(t)
	box, err := tenant.NewSecretBox(key)
	if err != nil {
		t.Fatal(err)
	}
	return &opsEnv{
		pool: pool, key: key, box: box, store: tenant.NewStore(pool, box, nil),
		env: map[string]string{
			"DATABASE_URL":       url,
			"CONNECT_SECRET_KEY": base64.StdEncoding.EncodeToString(key),
			"REDIS_URL":          "redis://" + testenv.ClosedAddr(t) + "/0",
		},
		base: time.Now().Add(-100 * time.Hour).Truncate(time.Second).UTC(),
	}
}

// at is h hours after the seeds' base.
func (e *opsEnv) at(h float64) time.Time { return e.base.Add(time.Duration(h * float64(time.Hour))) }

func (e *opsEnv) now() time.Time { return e.at(100) }

func installBody(clientKey string, overrides map[string]any) []byte {
	m := map[string]any{
		"key": "com.example.app", "clientKey": clientKey, "sharedSecret": "shared-secret-of-" + clientKey,
		"baseUrl": "https://" + clientKey + ".atlassian.net", "productType": "jira", "eventType": "installed",
		"serverVersion": "100200", "pluginsVersion": "1001.0.0",
	}
	for k, v := range overrides {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// install installs clientKey at hour h through st (the env's store when nil).
func (e *opsEnv) install(t *testing.T, st *tenant.Store, clientKey string, h float64, overrides map[string]any) {
	t.Helper()
	if st == nil {
		st = e.store
	}
	p, err := tenant.ParseInstallPayload(installBody(clientKey, overrides))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Install(t.Context(), p, tenant.ReceivedAt(e.at(h), e.at(h))); err != nil {
		t.Fatalf("install %s: %v", clientKey, err)
	}
}

func (e *opsEnv) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.pool.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// seedTenants: a installed active, renamed once; b uninstalled; c installed
// inactive; d installed, license never read, and a site import of a's site.
func (e *opsEnv) seedTenants(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	e.install(t, nil, "a", 1, nil)
	e.install(t, nil, "a", 2, map[string]any{"baseUrl": "https://a-renamed.atlassian.net", "pluginsVersion": "1002.0.0"})
	e.install(t, nil, "b", 1, nil)
	if _, err := e.store.Uninstall(ctx, "b", tenant.ReceivedAt(e.at(3), e.at(3))); err != nil {
		t.Fatal(err)
	}
	e.install(t, nil, "c", 1, nil)
	e.install(t, nil, "d", 4, map[string]any{"baseUrl": "https://a-renamed.atlassian.net"})
	if err := e.store.SetLicense(ctx, "a", connectrelay.LicenseActive, e.at(5)); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetLicense(ctx, "c", connectrelay.LicenseInactive, e.at(5)); err != nil {
		t.Fatal(err)
	}
}

func decodeJSON[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\n%s", err, out)
	}
	return v
}

func noSecret(t *testing.T, outputs ...string) {
	t.Helper()
	for _, out := range outputs {
		if strings.Contains(out, "shared-secret-of-") {
			t.Errorf("output holds a shared secret:\n%s", out)
		}
	}
}

func TestTenantsList_FiltersByStateAndLicense(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	e.seedTenants(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a,b,c,d"},
		{[]string{"--state", "all"}, "a,b,c,d"},
		{[]string{"--state", "installed"}, "a,c,d"},
		{[]string{"--state", "uninstalled"}, "b"},
		{[]string{"--license", "active"}, "a"},
		{[]string{"--license", "unknown", "--state", "installed"}, "d"},
		{[]string{"--state=installed", "--license=inactive"}, "c"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"tenants", "list", "--json"}, tc.args...)
			code, out, errOut := run(t, e.env, e.now, args...)
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			var keys []string
			for _, v := range decodeJSON[[]map[string]any](t, out) {
				keys = append(keys, v["clientKey"].(string))
			}
			if got := strings.Join(keys, ","); got != tc.want {
				t.Errorf("clientKeys = %s, want %s", got, tc.want)
			}
			noSecret(t, out)
		})
	}
	code, out, _ := run(t, e.env, e.now, "tenants", "list", "--state", "uninstalled")
	if code != ExitOK || !strings.Contains(out, "PLATFORM") || !strings.Contains(out, "b  ") ||
		!strings.Contains(out, "uninstalled") || !strings.Contains(out, "1 tenant(s)") {
		t.Errorf("text list = %d\n%s", code, out)
	}
}

func TestTenantsShow_ReportsStateVersionsHistoryAndSiteImportLinks(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	e.seedTenants(t)
	e.exec(t, `INSERT INTO migration_transfers (transfer_id, client_key, migration_details, state, last_percent)
		VALUES ('tr-a', 'a', '{}', 'ready', 40)`)
	code, out, errOut := run(t, e.env, e.now, "tenants", "show", "a", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	type report struct {
		Tenant struct {
			ClientKey, BaseURL, State, License, PluginsVersion, ServerVersion, SecretKeyID string
		}
		BaseURLHistory []struct{ From, To string }
		Events         []struct {
			Type    string
			Applied bool
			Changes []string
		}
		SiteImportLinks []struct{ ClientKey, OtherClientKey, BaseURL string }
		Transfers       []struct {
			TransferID  string
			LastPercent int
		}
	}
	rep := decodeJSON[report](t, out)
	if rep.Tenant.State != "installed" || rep.Tenant.License != "active" || rep.Tenant.PluginsVersion != "1002.0.0" ||
		rep.Tenant.ServerVersion != "100200" || rep.Tenant.BaseURL != "https://a-renamed.atlassian.net" ||
		rep.Tenant.SecretKeyID != tenant.KeyID(e.key) {
		t.Errorf("tenant = %+v", rep.Tenant)
	}
	if len(rep.BaseURLHistory) != 1 || rep.BaseURLHistory[0].From != "https://a.atlassian.net" ||
		rep.BaseURLHistory[0].To != "https://a-renamed.atlassian.net" {
		t.Errorf("baseUrl history = %+v, want the one rename", rep.BaseURLHistory)
	}
	if len(rep.SiteImportLinks) != 1 || rep.SiteImportLinks[0].ClientKey != "d" || rep.SiteImportLinks[0].OtherClientKey != "a" {
		t.Errorf("site-import links = %+v, want d importing a's site", rep.SiteImportLinks)
	}
	// Newest first: license, linked (d's import), installed (rename), installed.
	var types []string
	for _, ev := range rep.Events {
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, ","); got != "license,linked,installed,installed" {
		t.Errorf("event types = %s", got)
	}
	if len(rep.Transfers) != 1 || rep.Transfers[0].TransferID != "tr-a" || rep.Transfers[0].LastPercent != 40 {
		t.Errorf("transfers = %+v", rep.Transfers)
	}

	code, text, _ := run(t, e.env, e.now, "tenants", "show", "a", "--events", "2")
	for _, want := range []string{"tenant a", "installed (disabled)", "active", "plugins 1002.0.0",
		"https://a.atlassian.net -> https://a-renamed.atlassian.net", "d installed with baseUrl https://a-renamed.atlassian.net, already held by a",
		"last 2 event(s)", "tr-a"} {
		if !strings.Contains(text, want) {
			t.Errorf("text show lacks %q:\n%s", want, text)
		}
	}
	noSecret(t, out, text)
	if code != ExitOK {
		t.Errorf("text show exit %d", code)
	}
	code, _, errOut = run(t, e.env, e.now, "tenants", "show", "nobody")
	if code != ExitFailed || !strings.Contains(errOut, "nobody") || !strings.Contains(errOut, "not found") {
		t.Errorf("show of an unknown tenant = %d, %q; want exit 1 naming it", code, errOut)
	}
}

// seedTransfers: tr-open (ready, one upload imported, one failed, events
// received, twice for one) and tr-done (succeeded, settled).
func (e *opsEnv) seedTransfers(t *testing.T) {
	t.Helper()
	e.exec(t, `INSERT INTO migration_transfers (transfer_id, client_key, migration_id, migration_details, state, last_percent, created_at)
		VALUES ('tr-open', 'a', 'mig-1', '{"migrationId":"mig-1"}', 'ready', 50, now() - interval '1 hour'),
		       ('tr-done', 'c', '', '{}', 'succeeded', 100, now() - interval '2 hours')`)
	e.exec(t, `UPDATE migration_transfers SET settle_status = 'SUCCESS', settled_at = now(), settle_result = 'reported'
		WHERE transfer_id = 'tr-done'`)
	e.exec(t, `UPDATE migration_transfers SET settle_status = 'FAILED', settle_error = 'product answered 503',
		settle_message = 'upload s3-2 failed' WHERE transfer_id = 'tr-open'`)
	e.exec(t, `INSERT INTO migration_uploads (transfer_id, s3_key, label, state, size_bytes, sha256, attempts, imported_at, last_error)
		VALUES ('tr-open', 's3-1', '', 'imported', 1234, 'abc', 1, now(), NULL),
		       ('tr-open', 's3-2', 'final', 'failed', NULL, NULL, 72, NULL, 'download: 404 Not Found')`)
	e.exec(t, `INSERT INTO migration_events (client_key, dedupe_key, event_type, transfer_id, message_id, s3_key, known, outcome, deliveries, raw)
		VALUES ('a', 'm1', 'listener-triggered', 'tr-open', 'm1', '', true, 'handled', 1, '{}'),
		       ('a', 'm2', 'app-data-uploaded', 'tr-open', 'm2', 's3-1', true, 'handled', 2, '{}'),
		       ('a', 'm3', 'transfer-paused', 'tr-open', 'm3', '', false, 'unknown', 1, '{}')`)
}

func TestTransfersListAndShow_ReportEventsUploadsProgressSettlementAndErrors(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	e.seedTenants(t)
	e.seedTransfers(t)
	ids := func(args ...string) string {
		t.Helper()
		code, out, errOut := run(t, e.env, e.now, append([]string{"transfers", "list", "--json"}, args...)...)
		if code != ExitOK {
			t.Fatalf("transfers list %v: exit %d, %s", args, code, errOut)
		}
		var got []string
		for _, v := range decodeJSON[[]map[string]any](t, out) {
			got = append(got, v["transferId"].(string)+":"+v["settlement"].(string))
		}
		return strings.Join(got, ",")
	}
	if got := ids(); got != "tr-open:owed,tr-done:settled" {
		t.Errorf("transfers list = %s", got)
	}
	if got := ids("--open"); got != "tr-open:owed" {
		t.Errorf("transfers list --open = %s", got)
	}

	code, out, errOut := run(t, e.env, e.now, "transfers", "show", "tr-open", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	rep := decodeJSON[struct {
		Transfer struct{ ClientKey, MigrationID, State string }
		Events   []struct {
			EventType, Outcome string
			Deliveries         int
		}
		Uploads []struct {
			S3Key, State, LastError string
			SizeBytes               int64
		}
		ProgressSent int
		Settlement   struct{ Summary, Status, Message, Error string }
		Errors       []string
	}](t, out)
	if rep.Transfer.ClientKey != "a" || rep.Transfer.MigrationID != "mig-1" || rep.Transfer.State != "ready" || rep.ProgressSent != 50 {
		t.Errorf("transfer = %+v, progress %d", rep.Transfer, rep.ProgressSent)
	}
	if len(rep.Events) != 3 || rep.Events[1].Deliveries != 2 || rep.Events[2].Outcome != "unknown" {
		t.Errorf("events = %+v", rep.Events)
	}
	if len(rep.Uploads) != 2 || rep.Uploads[0].State != "imported" || rep.Uploads[0].SizeBytes != 1234 || rep.Uploads[1].State != "failed" {
		t.Errorf("uploads = %+v", rep.Uploads)
	}
	if rep.Settlement.Summary != "owed" || rep.Settlement.Status != "FAILED" || rep.Settlement.Message != "upload s3-2 failed" {
		t.Errorf("settlement = %+v", rep.Settlement)
	}
	if got := strings.Join(rep.Errors, " | "); !strings.Contains(got, "product answered 503") || !strings.Contains(got, "s3-2 (failed): download: 404 Not Found") {
		t.Errorf("errors = %q", got)
	}
	code, text, _ := run(t, e.env, e.now, "transfers", "show", "tr-open")
	for _, want := range []string{"transfer tr-open", "progress sent:", "50%", "status FAILED", "events received (3)", "app-data-uploaded",
		"uploads (2)", "s3-2", "errors (2)"} {
		if !strings.Contains(text, want) {
			t.Errorf("text show lacks %q:\n%s", want, text)
		}
	}
	if code != ExitOK {
		t.Errorf("text show exit %d", code)
	}
	if code, _, errOut := run(t, e.env, e.now, "transfers", "show", "tr-nope"); code != ExitFailed || !strings.Contains(errOut, "tr-nope") {
		t.Errorf("show of an unknown transfer = %d, %q", code, errOut)
	}
}

func TestStale_ListsInstalledTenantsWithNoInstalledSinceTime(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	// since = hour 50: a and c last installed before it, c since uninstalled; b
	// re-sent installed after it; d's last installed was older than its
	// applied one (recorded, not applied) but arrived after since.
	e.install(t, nil, "a", 10, nil)
	e.install(t, nil, "b", 10, nil)
	e.install(t, nil, "b", 60, nil)
	e.install(t, nil, "c", 10, nil)
	if _, err := e.store.Uninstall(t.Context(), "c", tenant.ReceivedAt(e.at(20), e.at(20))); err != nil {
		t.Fatal(err)
	}
	e.install(t, nil, "d", 10, nil)
	p, _ := tenant.ParseInstallPayload(installBody("d", nil))
	if res, err := e.store.Install(t.Context(), p, tenant.ReceivedAt(e.at(61), e.at(5))); err != nil || res.Applied {
		t.Fatalf("late install of d: %+v, %v; want recorded, not applied", res, err)
	}
	since := e.at(50).Format(time.RFC3339)
	code, out, errOut := run(t, e.env, e.now, "stale", "--since", since, "--json")
	if code != ExitOK {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	rep := decodeJSON[struct {
		Count   int
		Tenants []struct{ ClientKey string }
	}](t, out)
	if rep.Count != 1 || len(rep.Tenants) != 1 || rep.Tenants[0].ClientKey != "a" {
		t.Errorf("stale = %+v, want a alone", rep)
	}
	code, text, _ := run(t, e.env, e.now, "stale", "--since", since)
	if code != ExitOK || !strings.Contains(text, "1 installed tenant(s) sent no installed since") || !strings.Contains(text, "https://a.atlassian.net") {
		t.Errorf("text stale = %d\n%s", code, text)
	}
	// It flags, never changes: a is still installed.
	if tn, err := e.store.Get(t.Context(), "a"); err != nil || !tn.Installed {
		t.Errorf("a after stale = %+v, %v", tn, err)
	}
	// Less than 24 h ago: a clear error, naming --since, exit 2.
	code, _, errOut = run(t, e.env, e.now, "stale", "--since", e.at(80).Format(time.RFC3339))
	if code != ExitUsage || !strings.Contains(errOut, "--since") || !strings.Contains(errOut, "24 h") {
		t.Errorf("stale --since 20 h ago = %d, %q; want exit 2 naming --since and 24 h", code, errOut)
	}
}

func TestReencrypt_TwiceThenNothingLeftAndConcurrentWithInstalls(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	const n = 30
	for i := range n {
		e.install(t, nil, fmt.Sprintf("ck-%02d", i), 1, nil)
	}
	oldKey := e.key
	newKey := newSecretKey(t)
	rotatedBox, err := tenant.NewSecretBox(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	rotated := tenant.NewStore(e.pool, rotatedBox, nil)
	env := map[string]string{
		"DATABASE_URL":                e.env["DATABASE_URL"],
		"CONNECT_SECRET_KEY":          base64.StdEncoding.EncodeToString(newKey),
		"CONNECT_SECRET_KEY_PREVIOUS": base64.StdEncoding.EncodeToString(oldKey),
	}

	// The service keeps installing (rotating secrets) while the command runs.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			e.install(t, rotated, fmt.Sprintf("ck-%02d", i), 2, map[string]any{"sharedSecret": fmt.Sprintf("shared-secret-of-rotated-%02d", i)})
		}
		e.install(t, rotated, "ck-new", 2, nil)
	})
	code, out, errOut := run(t, env, e.now, "reencrypt", "--batch", "4", "--json")
	wg.Wait()
	if code != ExitOK {
		t.Fatalf("reencrypt: exit %d, %s", code, errOut)
	}
	first := decodeJSON[tenant.ReencryptReport](t, out)
	if first.Reencrypted > n || first.PrimaryKeyID != tenant.KeyID(newKey) {
		t.Errorf("first run = %+v", first)
	}
	code, out, errOut = run(t, env, e.now, "reencrypt", "--json")
	if code != ExitOK {
		t.Fatalf("second reencrypt: exit %d, %s", code, errOut)
	}
	second := decodeJSON[tenant.ReencryptReport](t, out)
	if second.Reencrypted != 0 || second.Total != n+1 || second.Current != n+1 || len(second.Undecryptable) != 0 {
		t.Errorf("second run = %+v, want 0 re-encrypted, %d of %d current", second, n+1, n+1)
	}
	code, text, _ := run(t, env, e.now, "reencrypt")
	if code != ExitOK || !strings.Contains(text, fmt.Sprintf("re-encrypted 0 secret(s); %d of %d tenant(s) sealed with key %s", n+1, n+1, tenant.KeyID(newKey))) {
		t.Errorf("text reencrypt = %d\n%s", code, text)
	}
	// The old key can go: every secret opens with the new one alone and is the
	// newest installed.
	newOnly, _ := tenant.NewSecretBox(newKey)
	st := tenant.NewStore(e.pool, newOnly, nil)
	for i := range n {
		ck := fmt.Sprintf("ck-%02d", i)
		s, err := st.SharedSecret(t.Context(), ck)
		if want := fmt.Sprintf("shared-secret-of-rotated-%02d", i); err != nil || string(s) != want {
			t.Errorf("%s with the new key alone = %q, %v; want %q", ck, s, err, want)
		}
	}
	noSecret(t, out, text, errOut)
}

func TestReencrypt_ReportsUndecryptableSecretsExit1(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	e.install(t, nil, "good", 1, nil)
	lost, _ := tenant.NewSecretBox(newSecretKey(t))
	e.install(t, tenant.NewStore(e.pool, lost, nil), "orphan", 1, nil)
	newKey := newSecretKey(t)
	env := map[string]string{
		"DATABASE_URL":                e.env["DATABASE_URL"],
		"CONNECT_SECRET_KEY":          base64.StdEncoding.EncodeToString(newKey),
		"CONNECT_SECRET_KEY_PREVIOUS": base64.StdEncoding.EncodeToString(e.key),
	}
	code, out, errOut := run(t, env, e.now, "reencrypt")
	if code != ExitFailed || !strings.Contains(out, "re-encrypted 1 secret(s); 1 of 2") || !strings.Contains(out, "orphan") ||
		!strings.Contains(errOut, "orphan") {
		t.Errorf("reencrypt with an orphan = %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}
