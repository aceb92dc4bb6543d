package handlers_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
)

// The receiver's speed is reported as a ratio against a baseline measured in the
// same run: GET /healthz (routing, logging, metrics, nothing else) versus the full
// hot paths over loopback HTTP with real Postgres and Redis.
//
//	go test -run='^$' -bench=Receiver -benchtime=5s ./handlers/

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
}

func BenchmarkReceiver_Baseline_Healthz(b *testing.B) {
	h := newHarness(b, harnessOpts{})
	benchRequests(b, func(int64) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, h.baseURL+handlers.PathHealth, nil)
		return req
	}, http.StatusOK)
}

// BenchmarkReceiver_MigrationEvent: HS256 verification (cached secret), JSON
// validation, tenant check and an asynq enqueue with a deterministic TaskID,
// each request a distinct messageId.
func BenchmarkReceiver_MigrationEvent(b *testing.B) {
	h := newHarness(b, harnessOpts{})
	h.seedTenant("ck-bench", site, secretA)
	// One token is valid for every body: the qsh covers method and path only.
	tmpl := h.atl.Request(b, h.baseURL, handlers.PathMigrationEvents, "{}", atlassiantest.Token{Alg: "HS256", Issuer: "ck-bench", Secret: []byte(secretA)})
	auth := tmpl.Header.Get("Authorization")
	benchRequests(b, func(i int64) *http.Request {
		body := fmt.Sprintf(`{"eventType":"listener-triggered","transferId":"tr-%d","messageId":"m-%d","migrationDetails":{"migrationId":"x","jiraClientKey":"ck-bench","confluenceClientKey":"unknown"}}`, i, i)
		req, _ := http.NewRequest(http.MethodPost, h.baseURL+handlers.PathMigrationEvents, bytes.NewBufferString(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		return req
	}, http.StatusOK)
}

// BenchmarkReceiver_Enabled: HS256 verification, a Postgres state update with a
// history row, and an enqueue.
func BenchmarkReceiver_Enabled(b *testing.B) {
	h := newHarness(b, harnessOpts{})
	h.seedTenant("ck-bench", site, secretA)
	now := time.Now()
	benchRequests(b, func(i int64) *http.Request {
		// A token of its own per request (exp differs): the same token again
		// would be acknowledged as a copy without being applied.
		return h.atl.Request(b, h.baseURL, handlers.PathEnabled, `{"clientKey":"ck-bench","eventType":"enabled"}`,
			atlassiantest.Token{Alg: "HS256", Issuer: "ck-bench", Secret: []byte(secretA), IssuedAt: now,
				ExpiresAt: now.Add(3*time.Minute + time.Duration(i)*time.Second)})
	}, http.StatusNoContent)
}

func benchRequests(b *testing.B, mk func(i int64) *http.Request, want int) {
	client := benchClient()
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Do(mk(n.Add(1)))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Errorf("status %d, want %d", resp.StatusCode, want)
				return
			}
		}
	})
}
