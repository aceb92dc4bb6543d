package service_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/service"
)

// When Redis dies under a running receiver, the very first callbacks already
// get their 503 fast (Atlassian re-sends), not after the whole 950 ms budget.
func TestReceiver_RedisKilledFirst503sAreFast(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedis(t)
	e := newE2EWith(t, "", func(c *config.Config) { c.RedisURL = "redis://" + rs.Addr + "/0" })
	const secret = "shared-secret-failfast-0123456789abcd"
	e.startWorker(service.WorkerOptions{})
	e.install("ck-ff", newProduct(t, secret, newSite()), secret)
	// Warm connections, as a receiver under traffic has.
	for i := range 5 {
		ev := ampEvent("listener-triggered", "tr-ff", "m-warm-"+string(rune('a'+i)), "ck-ff", "", "")
		if code := e.hs256(handlers.PathMigrationEvents, "ck-ff", secret, ev); code != http.StatusOK {
			t.Fatalf("warm-up = %d", code)
		}
	}
	rs.Kill()
	var took []time.Duration
	for i := range 10 {
		ev := ampEvent("listener-triggered", "tr-ff", "m-down-"+string(rune('a'+i)), "ck-ff", "", "")
		start := time.Now()
		code := e.hs256(handlers.PathMigrationEvents, "ck-ff", secret, ev)
		took = append(took, time.Since(start))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("event %d with Redis killed = %d, want 503", i, code)
		}
	}
	slices.Sort(took)
	t.Logf("503 latencies after the kill: median %s, max %s", took[len(took)/2], took[len(took)-1])
	if took[len(took)-1] > 300*time.Millisecond {
		t.Errorf("slowest 503 after the kill took %s, want under 300 ms", took[len(took)-1])
	}
}
