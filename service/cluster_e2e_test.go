package service_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/service"
)

// A real three-node Redis Cluster on loopback behind a redis-cluster://
// REDIS_URL: asynq (through its cluster client), the dedupe claims, the replay
// guard and the secret invalidations of two receivers all work across slots on
// other nodes; a tenant is initialized, a migration with a re-sent upload before
// its listener-triggered is imported once and settled once, a rotated secret is
// refused by the other replica, and nothing logs a cross-slot error.
func TestCluster_ReceiversAndWorkerRunOnAThreeNodeCluster(t *testing.T) {
	t.Parallel()
	nodes := testenv.StartRedisCluster(t)
	e := newE2EWith(t, "", func(c *config.Config) { c.RedisURL = "redis-cluster://" + strings.Join(nodes, ",") })
	const secret = "shared-secret-cluster-e2e-0123456789a"
	const rotated = "shared-secret-cluster-e2e-rotated-0123"
	amp := newAMPSite(t)
	amp.data["k1"] = bytes.Repeat([]byte("first part "), 500)
	amp.data["k2"] = []byte("the final part")
	prod := newProduct(t, secret, amp)
	stopWorker := e.startWorker(service.WorkerOptions{})
	e.install("ck-cl", prod, secret)
	e.waitLicense("ck-cl", connectrelay.LicenseActive, 10*time.Second, "license recorded through the cluster")

	send := func(ev map[string]any) {
		t.Helper()
		if code := e.hs256(handlers.PathMigrationEvents, "ck-cl", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d, want 200", ev["eventType"], code)
		}
	}
	send(ampEvent("app-data-uploaded", "tr-cl", "m-up-1", "ck-cl", "k1", "part-1"))
	send(ampEvent("app-data-uploaded", "tr-cl", "m-up-1", "ck-cl", "k1", "part-1"))
	for range 2 {
		send(ampEvent("listener-triggered", "tr-cl", "m-lt-1", "ck-cl", "", ""))
	}
	send(ampEvent("app-data-uploaded", "tr-cl", "m-up-2", "ck-cl", "k2", "final"))
	e.waitSettledSuccess("tr-cl", amp, 15*time.Second)
	for key := range amp.data {
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM migration_imported_data WHERE transfer_id = 'tr-cl' AND s3_key = $1`, key).Scan(&n); err != nil || n != 1 {
			t.Errorf("%s imported %d times (%v), want 1", key, n, err)
		}
		if n := amp.gets(key); n != 1 {
			t.Errorf("%s downloaded %d times, want 1", key, n)
		}
	}

	eventually(t, 10*time.Second, "lifecycle and migration queues drained", func() bool {
		for _, q := range []string{"lifecycle", "migration"} {
			info, err := e.inspector.GetQueueInfo(q)
			if err != nil || info.Pending+info.Active+info.Retry+info.Archived+info.Scheduled != 0 {
				return false
			}
		}
		return true
	})
	for _, l := range e.logs.Lines() {
		if strings.Contains(l, "CROSSSLOT") || strings.Contains(l, "MOVED") || strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("log line: %s", l)
		}
	}
	stopWorker()
	// The worker stops (the fake product verifies the old secret only); a
	// second receiver on the same cluster caches the secret, then hears the
	// rotation installed through the first one (pub/sub through the cluster).
	replicaB := e.startReceiver("receiver-b")
	enabledAtB := func(s string) int {
		t.Helper()
		return e.do(e.atl.Request(t, replicaB, handlers.PathEnabled, map[string]any{"clientKey": "ck-cl", "eventType": "enabled"},
			atlassiantest.Token{Alg: "HS256", Issuer: "ck-cl", Secret: []byte(s)}))
	}
	if code := enabledAtB(secret); code != http.StatusNoContent {
		t.Fatalf("replica B with the current secret = %d", code)
	}
	e.installAt("ck-cl", prod, rotated, time.Now().Add(time.Second))
	eventually(t, 3*time.Second, "replica B refuses the rotated-away secret", func() bool { return enabledAtB(secret) == http.StatusUnauthorized })

}
