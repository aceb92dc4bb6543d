package service

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func TestHealthcheck_AsksTheRunningProcessOnThisHost(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !ready {
			http.Error(w, "redis: connection refused", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/readyz" && r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var out strings.Builder
	if code := healthcheck("receiver", config.Config{ListenAddr: ":" + port}, &out); code != 0 {
		t.Fatalf("ready receiver: exit %d: %s", code, out.String())
	}
	if code := healthcheck("worker", config.Config{WorkerMetricsAddr: "127.0.0.1:" + port}, &out); code != 0 {
		t.Fatalf("live worker: exit %d: %s", code, out.String())
	}
	ready = false
	out.Reset()
	if code := healthcheck("receiver", config.Config{ListenAddr: "0.0.0.0:" + port}, &out); code != 1 || !strings.Contains(out.String(), "redis: connection refused") {
		t.Fatalf("unready receiver: exit %d: %q, want 1 and the reason", code, out.String())
	}
	out.Reset()
	if code := healthcheck("receiver", config.Config{ListenAddr: testenv.ClosedAddr(t)}, &out); code != 1 || out.Len() == 0 {
		t.Fatalf("nothing listening: exit %d: %q", code, out.String())
	}
	out.Reset()
	if code := healthcheck("worker", config.Config{}, &out); code != 1 || !strings.Contains(out.String(), "WORKER_METRICS_ADDR") {
		t.Fatalf("metrics off: exit %d: %q", code, out.String())
	}
}
