package service_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
)

// A signed install's token binds iss, aud and qsh, not the body: whoever
// captures one (a proxy's log, a debugging paste) could, within its three
// minutes, send it again with their own sharedSecret and baseUrl. The receiver
// accepts each token with one body only.
func TestReceiver_RefusesASignedInstallTokenReplayedWithAnotherBody(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-replay-0123456789abc"
	prod := newProduct(t, secret, newSite())
	body := atlassiantest.InstallBody("ck-1", prod.BaseURL(), secret, appKey)
	req := e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-1"})
	token := req.Header.Get("Authorization")
	if code := e.do(req); code != http.StatusNoContent {
		t.Fatalf("installed = %d, want 204", code)
	}
	resend := func(b map[string]any) int {
		t.Helper()
		r := e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, b, atlassiantest.Token{Issuer: "ck-1"})
		r.Header.Set("Authorization", token)
		return e.do(r)
	}
	// Atlassian re-delivering the same request is harmless and accepted.
	if code := resend(body); code != http.StatusNoContent {
		t.Errorf("the same token with the same body = %d, want 204 (a re-delivery)", code)
	}
	attacker := newProduct(t, "attacker-secret-0123456789abcdef0123", newSite())
	for name, b := range map[string]map[string]any{
		"another secret and baseUrl": atlassiantest.InstallBody("ck-1", attacker.BaseURL(), "attacker-secret-0123456789abcdef0123", appKey),
		"another secret":             atlassiantest.InstallBody("ck-1", prod.BaseURL(), "attacker-secret-0123456789abcdef0123", appKey),
	} {
		if code := resend(b); code != http.StatusUnauthorized {
			t.Errorf("the token replayed with %s = %d, want 401", name, code)
		}
	}
	tn, err := e.store.Get(context.Background(), "ck-1")
	if err != nil {
		t.Fatal(err)
	}
	if tn.BaseURL != prod.BaseURL() {
		t.Errorf("baseUrl = %s, want the real site's %s", tn.BaseURL, prod.BaseURL())
	}
	got, err := e.store.SharedSecret(context.Background(), "ck-1")
	if err != nil || string(got) != secret {
		t.Errorf("the shared secret was replaced (%v)", err)
	}
	found := false
	for _, line := range e.logs.Lines() {
		found = found || strings.Contains(line, "replayed")
	}
	if !found {
		t.Error("the refusal is not logged as a replay")
	}
}
