package handlers_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connectrelay/connectrelay/handlers"
)

// monitoringUI stands in for asynqmon: it counts the requests that reach it and
// reads their bodies as asynqmon's JSON decoder would.
type monitoringUI struct{ reached atomic.Int64 }

func (u *monitoringUI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.reached.Add(1)
	if _, err := io.ReadAll(r.Body); err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func TestMonitoring_RefusesCrossSiteChanges(t *testing.T) {
	t.Parallel()
	const token = "admin-token-0123456789abcdef"
	ui := &monitoringUI{}
	h := newHarness(t, harnessOpts{adminToken: token, monitoring: ui})
	own := h.internalURL // the UI's own origin: scheme://host:port of the internal listener
	const pause = handlers.PathMonitoring + "/api/queues/lifecycle:pause"
	tests := []struct {
		name        string
		method      string
		path        string
		secFetch    string // Sec-Fetch-Site; "" = not sent
		origin      string // Origin; "" = not sent
		contentType string
		want        int
	}{
		// What a cross-site form post sends (the reproduced attack).
		{"cross-site form post", http.MethodPost, pause, "cross-site", "https://evil.example", "text/plain", http.StatusForbidden},
		{"cross-site archive all", http.MethodPost, handlers.PathMonitoring + "/api/queues/lifecycle/retry_tasks:archive_all", "cross-site", "https://evil.example", "text/plain", http.StatusForbidden},
		{"same-site (sibling subdomain)", http.MethodPost, pause, "same-site", "https://other.example.com", "", http.StatusForbidden},
		{"cross-site with our Origin forged is still cross-site", http.MethodPost, pause, "cross-site", own, "", http.StatusForbidden},
		{"old browser: foreign Origin only", http.MethodPost, pause, "", "https://evil.example", "text/plain", http.StatusForbidden},
		{"old browser: opaque Origin", http.MethodPost, pause, "", "null", "", http.StatusForbidden},
		{"cross-site DELETE", http.MethodDelete, handlers.PathMonitoring + "/api/queues/lifecycle", "cross-site", "https://evil.example", "", http.StatusForbidden},
		{"cross-site PUT", http.MethodPut, pause, "cross-site", "https://evil.example", "", http.StatusForbidden},
		{"cross-site PATCH", http.MethodPatch, pause, "cross-site", "https://evil.example", "", http.StatusForbidden},
		{"cross-site OPTIONS", http.MethodOptions, pause, "cross-site", "https://evil.example", "", http.StatusForbidden},
		{"cross-site POST to the root", http.MethodPost, handlers.PathMonitoring, "cross-site", "https://evil.example", "", http.StatusForbidden},
		// The UI's own fetches, and tools using the token.
		{"same-origin fetch of the UI", http.MethodPost, pause, "same-origin", own, "application/json", http.StatusNoContent},
		{"user-initiated (Sec-Fetch-Site none)", http.MethodPost, pause, "none", "", "", http.StatusNoContent},
		{"old browser: own Origin", http.MethodPost, pause, "", own, "application/json", http.StatusNoContent},
		{"curl or a script: neither header", http.MethodPost, pause, "", "", "", http.StatusNoContent},
		// Reading stays possible from a link on another site.
		{"cross-site GET", http.MethodGet, handlers.PathMonitoring + "/api/queues", "cross-site", "", "", http.StatusNoContent},
		{"cross-site HEAD", http.MethodHead, handlers.PathMonitoring, "cross-site", "", "", http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ui.reached.Load()
			req, _ := http.NewRequest(tt.method, h.internalURL+tt.path, strings.NewReader(""))
			req.SetBasicAuth("ops", token) // cached by the operator's browser
			if tt.secFetch != "" {
				req.Header.Set("Sec-Fetch-Site", tt.secFetch)
			}
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			code, body := h.do(req)
			if code != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
			reached := ui.reached.Load() - before
			if tt.want == http.StatusForbidden {
				if reached != 0 {
					t.Errorf("a refused request reached the monitoring UI")
				}
				if !strings.Contains(body, "cross-site") {
					t.Errorf("403 body %q does not say why", body)
				}
			} else if reached != 1 {
				t.Errorf("an allowed request did not reach the monitoring UI")
			}
		})
	}
}

func TestMonitoring_ForbidsFraming(t *testing.T) {
	t.Parallel()
	const token = "admin-token-0123456789abcdef"
	h := newHarness(t, harnessOpts{adminToken: token, monitoring: &monitoringUI{}})
	for _, tt := range []struct {
		name string
		set  func(r *http.Request)
	}{
		{"authenticated", func(r *http.Request) { r.SetBasicAuth("ops", token) }},
		{"unauthenticated", func(*http.Request) {}},
		{"refused cross-site", func(r *http.Request) {
			r.SetBasicAuth("ops", token)
			r.Method = http.MethodPost
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.internalURL+handlers.PathMonitoring, nil)
			tt.set(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("X-Frame-Options = %q, want DENY (status %d)", got, resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != "frame-ancestors 'none'" {
				t.Errorf("Content-Security-Policy = %q, want frame-ancestors 'none' (status %d)", got, resp.StatusCode)
			}
		})
	}
}

func TestMonitoring_BoundsRequestBodies(t *testing.T) {
	t.Parallel()
	const token = "admin-token-0123456789abcdef"
	ui := &monitoringUI{}
	h := newHarness(t, harnessOpts{adminToken: token, monitoring: ui})
	big := strings.Repeat("x", handlers.MonitoringBodyLimit+1)
	for _, tt := range []struct {
		name    string
		body    io.Reader
		chunked bool
		want    int
	}{
		{"declared length over the limit", strings.NewReader(big), false, http.StatusRequestEntityTooLarge},
		{"chunked body over the limit", io.MultiReader(strings.NewReader(big)), true, http.StatusBadRequest},
		{"a batch of task ids", strings.NewReader(`{"task_ids":["a","b","c"]}`), false, http.StatusNoContent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, h.internalURL+handlers.PathMonitoring+"/api/queues/default/pending_tasks:batch_delete", tt.body)
			if tt.chunked {
				req.ContentLength = -1 // io.MultiReader hides the length: sent chunked
			}
			req.SetBasicAuth("ops", token)
			if code, body := h.do(req); code != tt.want {
				t.Errorf("= %d %s, want %d", code, body, tt.want)
			}
		})
	}
}
