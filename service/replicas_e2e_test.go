package service_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
)

// Two running receivers (replicas) on one Postgres and one Redis: after a
// rotation installed through replica A, replica B refuses the old secret
// within a bounded time instead of serving it from its cache.
func TestReceiver_RotatedSecretIsRefusedByTheOtherReplicaSoon(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const oldSecret = "shared-secret-e2e-replica-old-01234567"
	const newSecret = "shared-secret-e2e-replica-new-01234567"
	prod := newProduct(t, oldSecret, newSite())
	e.install("ck-1", prod, oldSecret)

	replicaB := e.startReceiver("receiver-b")

	enabledAtB := func(secret string) int {
		t.Helper()
		return e.do(e.atl.Request(t, replicaB, handlers.PathEnabled, map[string]any{"clientKey": "ck-1", "eventType": "enabled"},
			atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secret)}))
	}
	if code := enabledAtB(oldSecret); code != http.StatusNoContent {
		t.Fatalf("replica B with the current secret = %d", code) // now cached at B
	}
	e.installAt("ck-1", prod, newSecret, time.Now().Add(time.Second)) // through replica A
	start := time.Now()
	for enabledAtB(oldSecret) != http.StatusUnauthorized {
		if time.Since(start) > 2*time.Second {
			t.Fatal("replica B still accepts the rotated-away secret 2 s after the install through A")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := enabledAtB(newSecret); code != http.StatusNoContent {
		t.Errorf("replica B with the new secret = %d, want 204", code)
	}
}
