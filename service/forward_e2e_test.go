package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/webhook"
	"github.com/connectrelay/connectrelay/service"
)

const (
	forwardSecret = "whsec_ZTJlLWZvcndhcmQtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="
	internalToken = "e2e-internal-token-0123456789abcdefXYZ"
)

// delivered is one delivery the test backend accepted.
type delivered struct {
	id   string
	typ  string
	data map[string]any
}

// testBackend is a vendor backend in any language, as forwarding sees it: it
// verifies every delivery's Standard Webhooks signature, refuses the first
// failFirst tries of every webhook-id with a 500, and answers an upload with
// 202, then streams its data from the internal API and reports it imported.
type testBackend struct {
	t         *testing.T
	secret    webhook.Secret
	failFirst int
	// internalURL and uploads: where the data is and what each upload holds.
	uploads map[string][]byte

	mu       sync.Mutex
	tries    map[string]int
	accepted []delivered
	bodies   [][]byte
	results  map[string]int // s3Key -> status of the result report
}

func newTestBackend(t *testing.T, failFirst int) *testBackend {
	sec, err := webhook.ParseSecret(forwardSecret)
	if err != nil {
		t.Fatal(err)
	}
	return &testBackend{t: t, secret: sec, failFirst: failFirst, uploads: map[string][]byte{},
		tries: map[string]int{}, results: map[string]int{}}
}

func (b *testBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, err := b.secret.Verify(r.Header, body, time.Now(), 0)
	if err != nil {
		b.t.Errorf("delivery does not verify: %v", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var m struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Type == "" || m.Timestamp.IsZero() || m.Data == nil {
		b.t.Errorf("delivery %s: body %s is not {type, timestamp, data}: %v", id, body, err)
	}
	b.mu.Lock()
	b.bodies = append(b.bodies, body)
	b.tries[id]++
	fail := b.tries[id] <= b.failFirst
	if !fail {
		b.accepted = append(b.accepted, delivered{id, m.Type, m.Data})
	}
	b.mu.Unlock()
	if fail {
		http.Error(w, `{"message":"database busy"}`, http.StatusInternalServerError)
		return
	}
	if m.Type != "migration.upload_ready" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	go b.importUpload(m.Data)
}

// importUpload fetches an upload from the internal API and reports the result.
func (b *testBackend) importUpload(data map[string]any) {
	s3Key, _ := data["s3Key"].(string)
	dataURL, _ := data["dataUrl"].(string)
	resultURL, _ := data["resultUrl"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dataURL, nil)
	req.Header.Set("Authorization", "Bearer "+internalToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Errorf("GET dataUrl: %v", err)
		return
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status := "imported"
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, b.uploads[s3Key]) {
		b.t.Errorf("GET dataUrl %s = %d %q, want the upload's data %q", dataURL, resp.StatusCode, got, b.uploads[s3Key])
		status = "failed"
	}
	rb, _ := json.Marshal(map[string]string{"status": status, "message": "rows written"})
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, resultURL, bytes.NewReader(rb))
	req.Header.Set("Authorization", "Bearer "+internalToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		b.t.Errorf("POST resultUrl: %v", err)
		return
	}
	resp.Body.Close()
	b.mu.Lock()
	b.results[s3Key] = resp.StatusCode
	b.mu.Unlock()
}

func (b *testBackend) acceptedTypes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, d := range b.accepted {
		out = append(out, d.typ)
	}
	return out
}

// forwardingTo configures a receiver and worker to forward to url.
func forwardingTo(url string) func(*config.Config) {
	return func(c *config.Config) {
		c.ForwardURL = url
		c.ForwardSecret = forwardSecret
		c.ForwardTimeout = 5 * time.Second
		c.InternalToken = internalToken
	}
}

// serveOn serves h on ln until the test ends.
func serveOn(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// A backend in any language hears every kind of change, once each though it
// refused the first two tries, with the same webhook-id on every try; an upload
// it answered 202 and later reported imported settles the transfer SUCCESS
// once; no body and no log line holds a secret or a token.
func TestForward_EveryEventReachesTheBackendOnceWithAStableWebhookID(t *testing.T) {
	t.Parallel()
	backend := newTestBackend(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, backend)
	e := newE2EWith(t, "", forwardingTo("http://"+ln.Addr().String()+"/atlassian/events"))

	const secret = "shared-secret-forward-e2e-0123456789"
	amp := newAMPSite(t)
	amp.data["exports/users.json"] = []byte(`[{"id":1}]`)
	backend.uploads["exports/users.json"] = amp.data["exports/users.json"]
	prod := newProduct(t, secret, amp)
	e.startWorker(service.WorkerOptions{})

	e.install("ck-f1", prod, secret)
	if code := e.hs256(handlers.PathEnabled, "ck-f1", secret, map[string]any{"clientKey": "ck-f1", "eventType": "enabled"}); code != http.StatusNoContent {
		t.Fatalf("enabled = %d", code)
	}
	for _, ev := range []map[string]any{
		ampEvent("listener-triggered", "tr-fw", "m-lt", "ck-f1", "", ""),
		ampEvent("app-data-uploaded", "tr-fw", "m-up", "ck-f1", "exports/users.json", "final"),
		{"eventType": "transfer-paused", "messageId": "m-new", "transferId": "tr-fw"},
	} {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-f1", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d", ev["eventType"], code)
		}
	}
	eventually(t, 30*time.Second, "the transfer settled", func() bool {
		return slices.Contains(backend.acceptedTypes(), "migration.transfer_settled")
	})
	// Another clientKey on the same site: a site import.
	body := atlassiantest.InstallBody("ck-f2", prod.BaseURL(), secret, appKey)
	if code := e.do(e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-f2"})); code != http.StatusNoContent {
		t.Fatalf("installed ck-f2 = %d", code)
	}
	// A descriptor upgrade: tenant.updated. (A secret rotation would be one too,
	// but the fake product verifies with the one secret it was given.)
	upgrade := atlassiantest.InstallBody("ck-f1", prod.BaseURL(), secret, appKey)
	upgrade["pluginsVersion"] = "1002.0.0-SNAPSHOT"
	if code := e.do(e.atl.Request(t, e.cfg.BaseURL, handlers.PathInstalled, upgrade, atlassiantest.Token{Issuer: "ck-f1"})); code != http.StatusNoContent {
		t.Fatalf("upgrade installed = %d", code)
	}
	if code := e.hs256(handlers.PathDisabled, "ck-f1", secret, map[string]any{"clientKey": "ck-f1", "eventType": "disabled"}); code != http.StatusNoContent {
		t.Fatalf("disabled = %d", code)
	}
	unBody := atlassiantest.InstallBody("ck-f1", prod.BaseURL(), "", appKey)
	delete(unBody, "sharedSecret")
	unBody["eventType"] = "uninstalled"
	if code := e.do(e.atl.Request(t, e.cfg.BaseURL, handlers.PathUninstalled, unBody, atlassiantest.Token{Issuer: "ck-f1"})); code != http.StatusNoContent {
		t.Fatalf("uninstalled = %d", code)
	}

	want := []string{"tenant.installed", "tenant.license_changed", "tenant.enabled", "migration.transfer_ready",
		"migration.upload_ready", "migration.event", "migration.transfer_settled", "tenant.site_import_detected",
		"tenant.updated", "tenant.disabled", "tenant.uninstalled"}
	eventually(t, 60*time.Second, "every kind of event delivered", func() bool {
		got := backend.acceptedTypes()
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond) // a repeat would have arrived by now

	backend.mu.Lock()
	defer backend.mu.Unlock()
	seen := map[string]bool{}
	for _, d := range backend.accepted {
		if seen[d.id] {
			t.Errorf("webhook-id %s (%s) accepted twice", d.id, d.typ)
		}
		seen[d.id] = true
		if n := backend.tries[d.id]; n != 3 {
			t.Errorf("webhook-id %s (%s) tried %d times, want 3: two refusals, then accepted", d.id, d.typ, n)
		}
		tn, _ := d.data["tenant"].(map[string]any)
		if tn["clientKey"] == nil || tn["baseUrl"] != prod.BaseURL() {
			t.Errorf("%s: tenant %v, want the tenant's public fields", d.typ, tn)
		}
		if d.typ != "migration.upload_ready" && d.data["sequence"] == nil {
			t.Errorf("%s: no sequence", d.typ)
		}
		if d.typ == "migration.transfer_settled" {
			if tr, _ := d.data["transfer"].(map[string]any); tr["settleStatus"] != "SUCCESS" {
				t.Errorf("settled transfer %v, want SUCCESS", tr)
			}
		}
	}
	if backend.results["exports/users.json"] != http.StatusAccepted {
		t.Errorf("result report answered %d, want 202 (queued)", backend.results["exports/users.json"])
	}
	success := 0
	for _, s := range amp.statuses() {
		if strings.HasPrefix(s, "SUCCESS") {
			success++
		}
	}
	if success != 1 {
		t.Errorf("progress calls %v: want SUCCESS exactly once", amp.statuses())
	}
	logs := e.logs.String()
	for _, secretText := range []string{secret, internalToken, strings.TrimPrefix(forwardSecret, "whsec_")} {
		for _, b := range backend.bodies {
			if bytes.Contains(b, []byte(secretText)) {
				t.Errorf("a forwarded body holds a secret: %s", b)
			}
		}
		if strings.Contains(logs, secretText) {
			t.Errorf("the logs hold a secret or token %q", secretText[:8])
		}
	}
	for _, b := range backend.bodies {
		if bytes.Contains(b, []byte("sharedSecret")) || bytes.Contains(b, []byte("\"jwt\"")) {
			t.Errorf("a forwarded body names a secret field: %s", b)
		}
	}
}

// A backend that is down (connections refused) for a while loses nothing: every
// event queued meanwhile arrives once it is back, once each.
func TestForward_BackendDownForAWhileLosesNothing(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // down: nothing listens there
	e := newE2EWith(t, "", forwardingTo("http://"+addr+"/events"))
	e.startWorker(service.WorkerOptions{})

	const secret = "shared-secret-forward-down-0123456789"
	var keys []string
	for i := range 5 {
		ck := "ck-down-" + string(rune('a'+i))
		keys = append(keys, ck)
		e.install(ck, newProduct(t, secret, newSite()), secret)
	}
	eventually(t, 20*time.Second, "deliveries failing while the backend is down", func() bool {
		return strings.Count(e.logs.String(), "connection refused") >= 5
	})
	backend := newTestBackend(t, 0)
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not listen on %s again: %v", addr, err)
	}
	serveOn(t, ln, backend)

	eventually(t, 60*time.Second, "every install delivered after the backend came back", func() bool {
		backend.mu.Lock()
		defer backend.mu.Unlock()
		n := 0
		for _, d := range backend.accepted {
			if d.typ == "tenant.installed" {
				n++
			}
		}
		return n == len(keys)
	})
	backend.mu.Lock()
	defer backend.mu.Unlock()
	got := map[string]int{}
	for _, d := range backend.accepted {
		if d.typ == "tenant.installed" {
			got[d.data["tenant"].(map[string]any)["clientKey"].(string)]++
		}
	}
	for _, ck := range keys {
		if got[ck] != 1 {
			t.Errorf("%s: installed delivered %d times, want 1", ck, got[ck])
		}
	}
}
