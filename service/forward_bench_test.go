package service_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/webhook"
	"github.com/connectrelay/connectrelay/service"
)

// Forwarded events per second through one worker (default concurrency 10)
// against a local backend that verifies every signature, with the same feed
// delivered to an in-process Go listener as the baseline measured in the same
// run: the ratio is what the HTTP hop and the signing cost.
//
//	go test -run='^$' -bench=Forward -benchtime=2000x ./service/
func BenchmarkForward_Baseline_InProcessListener(b *testing.B) {
	var n atomic.Int64
	benchDeliver(b, &n, func(e *e2e) service.WorkerOptions {
		return service.WorkerOptions{Listener: countingListener{&n}}
	}, nil)
}

func BenchmarkForward_SignedHTTPToALocalBackend(b *testing.B) {
	var n atomic.Int64
	sec, err := webhook.ParseSecret(forwardSecret)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := sec.Verify(r.Header, body, time.Now(), 0); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	benchDeliver(b, &n, func(*e2e) service.WorkerOptions { return service.WorkerOptions{} },
		forwardingTo("http://"+ln.Addr().String()+"/events"))
}

type countingListener struct{ n *atomic.Int64 }

func (c countingListener) TenantLifecycle(context.Context, *connectrelay.LifecycleEvent) error {
	c.n.Add(1)
	return nil
}

// benchDeliver installs one tenant, waits for its first events, then appends
// b.N events to the feed at once and times their delivery.
func benchDeliver(b *testing.B, n *atomic.Int64, opts func(*e2e) service.WorkerOptions, edit func(*config.Config)) {
	e := newE2EWith(b, "", func(c *config.Config) {
		c.WorkerConcurrency = 10
		c.LogLevel = "warn"
		if edit != nil {
			edit(c)
		}
	})
	e.startWorker(opts(e))
	const secret = "shared-secret-forward-bench-0123456789"
	e.install("ck-bench", newProduct(b, secret, newSite()), secret)
	eventually(b, 20*time.Second, "the install's events delivered", func() bool { return n.Load() >= 2 })
	time.Sleep(300 * time.Millisecond)
	n.Store(0)
	b.ResetTimer()
	start := time.Now()
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO event_outbox (client_key, type, transfer_id, data)
		SELECT 'ck-bench', 'tenant.updated', '', '{"changes":["bench"]}'::jsonb FROM generate_series(1, $1)`, b.N); err != nil {
		b.Fatal(err)
	}
	for n.Load() < int64(b.N) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d events delivered in 5 minutes", n.Load(), b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
}
