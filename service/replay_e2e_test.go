package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
)

// Against a running receiver: a captured install token replayed with the
// attacker's secret is refused (401) and the victim's secret keeps working; the
// attacker's never does. Atlassian's retry (same token, same body) is still 204.
func TestReceiver_CapturedInstallTokenReplayedWithAnotherBodyIsRefused(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const victimSecret = "shared-secret-e2e-victim-0123456789ab"
	const attackerSecret = "shared-secret-e2e-attacker-012345678"
	prod := newProduct(t, victimSecret, newSite())
	victim := atlassiantest.InstallBody("ck-victim", prod.BaseURL(), victimSecret, appKey)
	req := e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, victim, atlassiantest.Token{Issuer: "ck-victim"})
	auth := req.Header.Get("Authorization")
	send := func(body map[string]any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		r, err := http.NewRequest(http.MethodPost, e.cfg.BaseURL+handlers.PathInstalled, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", auth)
		return e.do(r)
	}
	if code := send(victim); code != http.StatusNoContent {
		t.Fatalf("genuine installed = %d", code)
	}
	if code := send(atlassiantest.InstallBody("ck-victim", prod.BaseURL(), attackerSecret, appKey)); code != http.StatusUnauthorized {
		t.Fatalf("captured token with the attacker's secret = %d, want 401", code)
	}
	if code := send(victim); code != http.StatusNoContent {
		t.Fatalf("Atlassian's retry (same token, same body) = %d, want 204", code)
	}
	if got, err := e.store.SharedSecret(context.Background(), "ck-victim"); err != nil || string(got) != victimSecret {
		t.Fatalf("stored secret = %q, %v; want the victim's", got, err)
	}
	enabled := map[string]any{"clientKey": "ck-victim", "eventType": "enabled"}
	if code := e.hs256(handlers.PathEnabled, "ck-victim", attackerSecret, enabled); code != http.StatusUnauthorized {
		t.Errorf("enabled signed with the attacker's secret = %d, want 401", code)
	}
	if code := e.hs256(handlers.PathEnabled, "ck-victim", victimSecret, enabled); code != http.StatusNoContent {
		t.Errorf("enabled signed with the victim's secret = %d, want 204", code)
	}
}
