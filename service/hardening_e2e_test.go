package service_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/service"
)

// TestReceiver_SignedInstallWithAZonedIPLiteralBaseURLIsRefused replays the
// red-team finding end to end: a genuinely signed install whose baseUrl is an
// IPv6 literal with a zone ending in an allowed domain used to be stored, and
// the worker then called the loopback address it names. It must be refused
// with 400 before anything is stored or queued, and nothing may reach the
// address.
func TestReceiver_SignedInstallWithAZonedIPLiteralBaseURLIsRefused(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(target.Close)
	_, port, err := net.SplitHostPort(target.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	e := newE2EWith(t, "", func(c *config.Config) {
		c.ProductHosts = []string{"127.0.0.1", "*.atlassian.net", "*.jira.com"}
	})
	e.startWorker(service.WorkerOptions{})
	for i, baseURL := range []string{
		"https://[::ffff:7f00:1%25.atlassian.net]:" + port,
		"http://[::ffff:7f00:1%25.atlassian.net]:" + port,
		"https://[::1%25.atlassian.net]:" + port,
		"https://[::ffff:a9fe:a9fe%25.atlassian.net]",
		"https://[fe80::1%25.jira.com]",
		"https://acme.atlassian.net.",
	} {
		clientKey := fmt.Sprintf("zoned-%d", i)
		body := atlassiantest.InstallBody(clientKey, baseURL, "attacker-secret-0123456789abcdef0123", appKey)
		if code := e.do(e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: clientKey})); code != http.StatusBadRequest {
			t.Errorf("installed with baseUrl %s = %d, want 400", baseURL, code)
		}
		if _, err := e.store.Get(context.Background(), clientKey); !errors.Is(err, tenant.ErrNotFound) {
			t.Errorf("tenant %s with baseUrl %s was stored (err %v)", clientKey, baseURL, err)
		}
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM tenants`).Scan(&n); err != nil || n != 0 {
		t.Errorf("tenants stored = %d (%v), want 0", n, err)
	}
	time.Sleep(300 * time.Millisecond) // time for a worker to make a call, were a task queued
	if got := hits.Load(); got != 0 {
		t.Errorf("the loopback address named by a zoned literal got %d requests", got)
	}
}
