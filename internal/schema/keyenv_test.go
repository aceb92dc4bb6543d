package schema

import (
	"io/fs"
	"testing"
	"testing/fstest"
	"time"

	"github.com/connectrelay/connectrelay/internal/testenv"
)

// TestMigrate0004_BackfillsTheKeyEnvironmentFromTheBaseURL: a database that
// ran every migration but 0004 (the rolling deploy that adds it) gets each
// existing tenant's key environment from its baseUrl's host, as
// connect.KeyEnvironment derives it, and production for anything else.
func TestMigrate0004_BackfillsTheKeyEnvironmentFromTheBaseURL(t *testing.T) {
	t.Parallel()
	ctx := ctxTimeout(t, 30*time.Second)
	pool := openPool(t, testenv.PostgresURL(t))
	names, err := fs.Glob(embedded, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	before := fstest.MapFS{}
	for _, n := range names {
		if n == "migrations/0004_key_environment.sql" {
			continue
		}
		b, err := fs.ReadFile(embedded, n)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = &fstest.MapFile{Data: b}
	}
	if len(before) != len(names)-1 {
		t.Fatalf("0004_key_environment.sql is not among the embedded migrations %q", names)
	}
	if err := migrate(ctx, pool, before); err != nil {
		t.Fatalf("migrate without 0004: %v", err)
	}
	want := map[string]string{
		"https://acme.atlassian.net":              "production",
		"https://acme.jira.com/wiki":              "production",
		"https://acme.jira-dev.com":               "staging",
		"https://ACME.JIRA-DEV.COM:443/wiki":      "staging",
		"https://acme.atlassian-us-gov-mod.net":   "fedramp",
		"https://acme.atlassian-stg-fedm.net":     "fedramp-staging",
		"https://jira-dev.com.evil.example":       "production",
		"https://evil-jira-dev.com":               "production",
		"http://127.0.0.1:8080":                   "production",
		"https://[::1]:8443":                      "production",
		"https://acme.jira-dev.com.atlassian.net": "production",
	}
	for baseURL := range want {
		if _, err := pool.Exec(ctx, `INSERT INTO tenants (client_key, app_key, base_url, installed, enabled,
			first_installed_at, last_installed_at, last_lifecycle_at, data_iat, installed_iat, enabled_iat,
			secret_key_id, secret_nonce, secret_ciphertext)
			VALUES ($1, 'app', $1, true, false, now(), now(), now(), now(), now(), now(), 'k', '\x00', '\x00')`, baseURL); err != nil {
			t.Fatalf("insert tenant %s: %v", baseURL, err)
		}
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	for baseURL, env := range want {
		var got string
		if err := pool.QueryRow(ctx, `SELECT key_env FROM tenants WHERE client_key = $1`, baseURL).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != env {
			t.Errorf("key_env of a tenant at %s = %q, want %q", baseURL, got, env)
		}
	}
}
