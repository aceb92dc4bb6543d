package tenant

import (
	"errors"
	"testing"

	"github.com/connectrelay/connectrelay/connect"
)

// TestInstall_RefusesAnotherKeyEnvironmentForAnExistingTenant: the install
// key server is chosen by the unsigned body's baseUrl, so a key served by the
// staging CDN could rotate a production tenant's secret and baseUrl given its
// clientKey. A tenant keeps the key environment of its first install; an
// install from another one is refused and leaves the tenant untouched.
func TestInstall_RefusesAnotherKeyEnvironmentForAnExistingTenant(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		first      string
		then       string
		refused    bool
		wantStored string
	}{
		{"production then staging", "https://acme.atlassian.net", "https://acme.jira-dev.com", true, connect.KeyEnvProduction},
		{"staging then production", "https://acme.jira-dev.com", "https://acme.atlassian.net", true, connect.KeyEnvStaging},
		{"production then FedRAMP", "https://acme.atlassian.net", "https://acme.atlassian-us-gov-mod.net", true, connect.KeyEnvProduction},
		{"rename within production", "https://acme.atlassian.net", "https://acme-renamed.jira.com", false, connect.KeyEnvProduction},
		{"rename within staging", "https://acme.jira-dev.com", "https://other.jira-dev.com", false, connect.KeyEnvStaging},
	}
	b := setup(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck := "ck-" + tc.name
			b.install(t, payload(t, ck, map[string]any{"baseUrl": tc.first, "sharedSecret": "first-secret"}), ts(1), ts(1))
			before, history := b.rowJSON(t, ck), len(b.history(t, ck))
			_, err := b.store.Install(testCtx(t), payload(t, ck, map[string]any{"baseUrl": tc.then, "sharedSecret": "second-secret"}), ReceivedAt(ts(2), ts(2)))
			if tc.refused {
				if !errors.Is(err, ErrKeyEnvironmentMismatch) {
					t.Fatalf("Install from %s for a tenant of %s: %v, want ErrKeyEnvironmentMismatch", tc.then, tc.first, err)
				}
				if after := b.rowJSON(t, ck); after != before {
					t.Errorf("tenant changed:\nbefore %s\nafter  %s", before, after)
				}
				if got := b.secret(t, ck); got != "first-secret" {
					t.Errorf("secret = %q, want first-secret", got)
				}
				if n := len(b.history(t, ck)); n != history {
					t.Errorf("history grew from %d to %d events", history, n)
				}
			} else if err != nil {
				t.Fatalf("Install: %v", err)
			}
			if got := b.keyEnv(t, ck); got != tc.wantStored {
				t.Errorf("stored key environment = %q, want %q", got, tc.wantStored)
			}
		})
	}
}

func (b *testBundle) keyEnv(t *testing.T, clientKey string) string {
	t.Helper()
	var env string
	if err := b.pool.QueryRow(testCtx(t), `SELECT key_env FROM tenants WHERE client_key = $1`, clientKey).Scan(&env); err != nil {
		t.Fatalf("key_env of %s: %v", clientKey, err)
	}
	return env
}
