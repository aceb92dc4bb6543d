package service_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/service"
)

// Through a running receiver and worker: after uninstalled, the tenant's kept
// secret still verifies its migration events; they are acknowledged and
// recorded, and the worker does not act on them (no transfer, no product call).
func TestMigration_EventsOfAnUninstalledTenantAreAcknowledgedNotActedOn(t *testing.T) {
	t.Parallel()
	e := newE2E(t, "")
	const secret = "shared-secret-e2e-uninst-0123456789ab"
	amp := newAMPSite(t)
	amp.data["k1"] = []byte("data of a tenant that left")
	prod := newProduct(t, secret, amp)
	e.install("ck-1", prod, secret)
	e.startWorker(service.WorkerOptions{})
	req := e.atl.Request(t, e.cfg.BaseURL, handlers.PathUninstalled,
		map[string]any{"clientKey": "ck-1", "baseUrl": prod.BaseURL(), "eventType": "uninstalled"}, atlassiantest.Token{Issuer: "ck-1"})
	if code := e.do(req); code != http.StatusNoContent {
		t.Fatalf("uninstalled = %d", code)
	}
	for _, ev := range []map[string]any{
		ampEvent("listener-triggered", "tr-gone", "m-lt", "ck-1", "", ""),
		ampEvent("app-data-uploaded", "tr-gone", "m-up", "ck-1", "k1", "final"),
	} {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-1", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d, want 200 (acknowledged)", ev["eventType"], code)
		}
	}
	eventually(t, 10*time.Second, "both events recorded as ignored", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM migration_events WHERE client_key = 'ck-1' AND outcome = 'ignored'`).Scan(&n)
		return n == 2
	})
	eventually(t, 5*time.Second, "tasks completed, not retried", func() bool {
		info, err := e.inspector.GetQueueInfo("migration")
		return err == nil && info.Pending == 0 && info.Active == 0 && info.Retry == 0 && info.Archived == 0
	})
	var transfers int
	_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM migration_transfers`).Scan(&transfers)
	if transfers != 0 {
		t.Errorf("%d transfers created for an uninstalled tenant", transfers)
	}
	if n := amp.gets("k1"); n != 0 {
		t.Errorf("the uninstalled tenant's data was downloaded %d times", n)
	}
	if s := amp.statuses(); len(s) != 0 {
		t.Errorf("progress reported for an uninstalled tenant: %v", s)
	}
}
