package tenant

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// testBundle is what a store test works with: a migrated database of its own.
type testBundle struct {
	url   string
	pool  *pgxpool.Pool
	key   []byte
	box   *SecretBox
	store *Store
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, SecretKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// setup gives a test its own migrated Postgres database and a Store over it.
func setup(t *testing.T) *testBundle {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pool, err := schema.Open(ctx, url)
	if err != nil {
		t.Fatalf("schema.Open: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := schema.Migrate(ctx, pool); err != nil {
		t.Fatalf("schema.Migrate: %v", err)
	}
	key := newKey(t)
	box, err := NewSecretBox(key)
	if err != nil {
		t.Fatalf("NewSecretBox: %v", err)
	}
	return &testBundle{url: url, pool: pool, key: key, box: box, store: NewStore(pool, box, testLogger(t))}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// base is the test clock's origin; ts(n) is n seconds after it. Whole seconds, like
// JWT iat, and representable exactly in Postgres.
var base = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func ts(n int) time.Time { return base.Add(time.Duration(n) * time.Second) }

// body is the installed body of docs/protocol.md#lifecycle-payloads for clientKey, with overrides
// applied (a nil value deletes the field).
func body(t testing.TB, clientKey string, overrides map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"key":                             "installed-addon-key",
		"clientKey":                       clientKey,
		"sharedSecret":                    "secret-of-" + clientKey,
		"serverVersion":                   "server-version",
		"pluginsVersion":                  "1.0.0",
		"baseUrl":                         "https://" + clientKey + ".atlassian.net",
		"displayUrl":                      "https://issues.example.com",
		"displayUrlServicedeskHelpCenter": "https://support.example.com",
		"productType":                     "jira",
		"description":                     "Atlassian Jira at https://example.atlassian.net",
		"serviceEntitlementNumber":        "SEN-number",
		"entitlementId":                   "Entitlement-Id",
		"entitlementNumber":               "Entitlement-Number",
		"eventType":                       "installed",
	}
	maps.Copy(m, overrides)
	for k, v := range m {
		if v == nil {
			delete(m, k)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// payload parses body(clientKey, overrides), failing the test on error.
func payload(t testing.TB, clientKey string, overrides map[string]any) InstallPayload {
	t.Helper()
	p, err := ParseInstallPayload(body(t, clientKey, overrides))
	if err != nil {
		t.Fatalf("ParseInstallPayload: %v", err)
	}
	return p
}

func (b *testBundle) install(t *testing.T, p InstallPayload, at, iat time.Time) InstallResult {
	t.Helper()
	res, err := b.store.Install(testCtx(t), p, ReceivedAt(at, iat))
	if err != nil {
		t.Fatalf("Install(%s): %v", p.ClientKey, err)
	}
	return res
}

func (b *testBundle) get(t *testing.T, clientKey string) connectrelay.Tenant {
	t.Helper()
	tn, err := b.store.Get(testCtx(t), clientKey)
	if err != nil {
		t.Fatalf("Get(%s): %v", clientKey, err)
	}
	return tn
}

func (b *testBundle) secret(t *testing.T, clientKey string) string {
	t.Helper()
	s, err := b.store.SharedSecret(testCtx(t), clientKey)
	if err != nil {
		t.Fatalf("SharedSecret(%s): %v", clientKey, err)
	}
	return string(s)
}

func (b *testBundle) history(t *testing.T, clientKey string) []Event {
	t.Helper()
	h, err := b.store.History(testCtx(t), clientKey, 1000)
	if err != nil {
		t.Fatalf("History(%s): %v", clientKey, err)
	}
	return h
}

// rowJSON is the tenant's row exactly as Postgres stores it.
func (b *testBundle) rowJSON(t *testing.T, clientKey string) string {
	t.Helper()
	var s string
	if err := b.pool.QueryRow(testCtx(t), `SELECT row_to_json(t)::text FROM tenants t WHERE client_key = $1`, clientKey).Scan(&s); err != nil {
		t.Fatalf("row of %s: %v", clientKey, err)
	}
	return s
}

func (b *testBundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(testCtx(t), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
