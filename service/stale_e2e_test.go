package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/service"
)

// scrape returns the worker's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestWorker_StaleTenantsGaugeCountsMissedUninstallsSinceStaleSince(t *testing.T) {
	t.Parallel()
	since := time.Now().Add(-48 * time.Hour).Truncate(time.Second).UTC()
	e := newE2EWith(t, "", func(c *config.Config) { c.StaleSince = since })
	// Two tenants last installed before STALE_SINCE, one of them uninstalled
	// since; one that re-sent installed after it.
	for _, ck := range []string{"old-1", "old-gone", "fresh"} {
		p, err := tenant.ParseInstallPayload([]byte(fmt.Sprintf(
			`{"key":%q,"clientKey":%q,"sharedSecret":"s-0123456789abcdef0123456789abcdef","baseUrl":"https://%s.atlassian.net","productType":"jira","eventType":"installed"}`,
			appKey, ck, ck)))
		if err != nil {
			t.Fatal(err)
		}
		at := since.Add(-72 * time.Hour)
		if ck == "fresh" {
			at = since.Add(time.Hour)
		}
		if _, err := e.store.Install(context.Background(), p, tenant.ReceivedAt(at, at)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Uninstall(context.Background(), "old-gone", tenant.ReceivedAt(since.Add(-time.Hour), since.Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(service.WorkerOptions{Test: service.WorkerTest{MetricsListener: ln, StaleInterval: 100 * time.Millisecond}})
	series := fmt.Sprintf(`connectrelay_stale_tenants{since=%q}`, since.Format(time.RFC3339))
	eventually(t, 5*time.Second, "gauge at 1", func() bool { return strings.Contains(scrape(t, ln.Addr().String()), series+" 1\n") })

	// old-1 re-sends installed: the next sweep counts 0.
	p, _ := tenant.ParseInstallPayload([]byte(fmt.Sprintf(
		`{"key":%q,"clientKey":"old-1","sharedSecret":"s-0123456789abcdef0123456789abcdef","baseUrl":"https://old-1.atlassian.net","productType":"jira","eventType":"installed"}`, appKey)))
	if _, err := e.store.Install(context.Background(), p, tenant.ReceivedAt(time.Now(), time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "gauge at 0", func() bool { return strings.Contains(scrape(t, ln.Addr().String()), series+" 0\n") })
}

func TestWorker_StaleTenantsGaugeHasNoSeriesUntilStaleSinceIs24hOld(t *testing.T) {
	t.Parallel()
	since := time.Now().Add(-12 * time.Hour).Truncate(time.Second).UTC()
	e := newE2EWith(t, "", func(c *config.Config) { c.StaleSince = since })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(service.WorkerOptions{Test: service.WorkerTest{MetricsListener: ln, StaleInterval: 50 * time.Millisecond}})
	eventually(t, 5*time.Second, "the sweep said it waits", func() bool {
		return strings.Contains(e.logs.String(), "stale tenant count starts once STALE_SINCE is more than 24 h ago")
	})
	time.Sleep(200 * time.Millisecond)
	if m := scrape(t, ln.Addr().String()); strings.Contains(m, "connectrelay_stale_tenants{") {
		t.Errorf("/metrics has a stale tenant count before STALE_SINCE is 24 h old:\n%s", m)
	}
}
