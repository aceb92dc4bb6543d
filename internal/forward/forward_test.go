package forward

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/webhook"
	"github.com/connectrelay/connectrelay/product"
)

const testSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

type tenants map[string]connectrelay.Tenant

func (t tenants) Get(_ context.Context, ck string) (connectrelay.Tenant, error) {
	tn, ok := t[ck]
	if !ok {
		return connectrelay.Tenant{}, errors.New("no such tenant")
	}
	return tn, nil
}

var testTenant = connectrelay.Tenant{
	HostInfo: connectrelay.HostInfo{ClientKey: "jira:ck1", BaseURL: "https://acme.atlassian.net", ProductType: "jira",
		InstallationID: "ari:cloud:ecosystem::installation/1", CloudID: "cloud-1"},
	Installed: true, Enabled: true, LicenseState: connectrelay.LicenseActive, SecretKeyID: "key-id-internal",
}

// delivery is one request the test backend received.
type delivery struct {
	header http.Header
	body   []byte
}

// backend is a test backend answering each delivery with the next of answers
// (the last one repeats).
type backend struct {
	mu      sync.Mutex
	got     []delivery
	answers []func(w http.ResponseWriter)
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.got = append(b.got, delivery{r.Header.Clone(), body})
	a := b.answers[min(len(b.got), len(b.answers))-1]
	b.mu.Unlock()
	a(w)
}

func status(code int, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func newForwarder(t *testing.T, answers ...func(w http.ResponseWriter)) (*Forwarder, *backend) {
	t.Helper()
	b := &backend{answers: answers}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	sec, err := webhook.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{URL: srv.URL + "/hooks/atlassian?token=backend-cred", Secret: sec, Timeout: 2 * time.Second,
		InternalURL: "http://127.0.0.1:8081/", Tenants: tenants{testTenant.ClientKey: testTenant}})
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

// verified checks a delivery's signature with the secret and decodes its body.
func verified(t *testing.T, d delivery) (string, map[string]any) {
	t.Helper()
	sec, _ := webhook.ParseSecret(testSecret)
	id, err := sec.Verify(d.header, d.body, time.Now(), 0)
	if err != nil {
		t.Fatalf("delivery does not verify: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(d.body, &m); err != nil {
		t.Fatal(err)
	}
	return id, m
}

func TestTenantLifecycle_DeliversASignedEventWithThePublicTenant(t *testing.T) {
	f, b := newForwarder(t, status(204, ""))
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ev := &connectrelay.LifecycleEvent{ID: "evt_42", Sequence: 42, Type: connectrelay.EventUpdated, At: at,
		Tenant: testTenant, Changes: []string{"shared secret rotated"}}
	if err := f.TenantLifecycle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	id, m := verified(t, b.got[0])
	if id != "evt_42" || m["type"] != "tenant.updated" || m["timestamp"] != "2026-12-01T10:00:00Z" {
		t.Fatalf("id %q, body %v", id, m)
	}
	data := m["data"].(map[string]any)
	tn := data["tenant"].(map[string]any)
	if data["sequence"] != float64(42) || tn["clientKey"] != "jira:ck1" || tn["installationId"] == nil ||
		tn["license"] != "active" || data["changes"].([]any)[0] != "shared secret rotated" {
		t.Fatalf("data %v", data)
	}
	if strings.Contains(string(b.got[0].body), "key-id-internal") || strings.Contains(strings.ToLower(string(b.got[0].body)), "secret\":") {
		t.Fatalf("internal or secret fields forwarded: %s", b.got[0].body)
	}
	if ct := b.got[0].header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

func TestTransferEvent_CarriesTheTransferAndTheRawEvent(t *testing.T) {
	f, b := newForwarder(t, status(200, "ok"))
	ev := &connectrelay.TransferEvent{ID: "evt_7", Sequence: 7, Type: connectrelay.EventMigrationEvent, At: time.Now(),
		Tenant: testTenant, Transfer: connectrelay.Transfer{TransferID: "tr-1", ClientKey: "jira:ck1"},
		Raw: json.RawMessage(`{"eventType":"something-new","x":1}`)}
	if err := f.TransferEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	_, m := verified(t, b.got[0])
	data := m["data"].(map[string]any)
	if data["transfer"].(map[string]any)["transferId"] != "tr-1" || data["event"].(map[string]any)["eventType"] != "something-new" {
		t.Fatalf("data %v", data)
	}
}

func TestEvents_AnyAnswerButA2xxRetries(t *testing.T) {
	for _, code := range []int{301, 400, 404, 408, 409, 429, 500, 502, 503} {
		f, _ := newForwarder(t, status(code, `{"message":"not now"}`))
		err := f.TenantLifecycle(context.Background(), &connectrelay.LifecycleEvent{ID: "evt_1", Type: connectrelay.EventInstalled, Tenant: testTenant})
		if !errors.Is(err, ErrStatus) || !strings.Contains(err.Error(), `"not now"`) {
			t.Errorf("%d: %v, want ErrStatus with the backend's message", code, err)
		}
		if strings.Contains(err.Error(), "backend-cred") {
			t.Errorf("%d: the error shows the URL's query: %v", code, err)
		}
	}
}

func TestImport_TheBackendsAnswerDecidesTheUpload(t *testing.T) {
	tests := []struct {
		answer      func(w http.ResponseWriter)
		imported    bool
		pending     bool
		failed      bool
		retryAfter  time.Duration
		wantMessage string
	}{
		{answer: status(200, ""), imported: true},
		{answer: status(204, ""), imported: true},
		{answer: status(202, ""), pending: true},
		{answer: status(400, `{"message":"unknown schema version 7"}`), failed: true, wantMessage: `"unknown schema version 7"`},
		{answer: status(404, "no such project"), failed: true, wantMessage: `"no such project"`},
		{answer: status(422, ""), failed: true},
		{answer: status(408, "")},
		{answer: status(429, "")},
		{answer: func(w http.ResponseWriter) { w.Header().Set("Retry-After", "120"); w.WriteHeader(429) }, retryAfter: 2 * time.Minute},
		{answer: func(w http.ResponseWriter) { w.Header().Set("Retry-After", "30"); w.WriteHeader(503) }, retryAfter: 30 * time.Second},
		{answer: status(500, "boom"), wantMessage: `"boom"`},
		{answer: func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://elsewhere.example/")
			w.WriteHeader(307)
		}},
	}
	for _, tc := range tests {
		f, b := newForwarder(t, tc.answer)
		req := &connectrelay.ImportRequest{Transfer: connectrelay.Transfer{TransferID: "tr 1", ClientKey: "jira:ck1"},
			Label: "final", S3Key: "dir/file ü.json", Attempt: 3, Data: strings.NewReader("never read")}
		err := f.Import(context.Background(), req)
		rec := httptest.NewRecorder()
		tc.answer(rec)
		name := rec.Result().Status
		switch {
		case tc.imported && err != nil:
			t.Errorf("%s: %v, want imported", name, err)
		case tc.pending && !errors.Is(err, connectrelay.ErrImportPending):
			t.Errorf("%s: %v, want ErrImportPending", name, err)
		case tc.failed && !errors.Is(err, connectrelay.ErrImportFailed):
			t.Errorf("%s: %v, want ErrImportFailed", name, err)
		case !tc.imported && !tc.pending && !tc.failed && (err == nil || errors.Is(err, connectrelay.ErrImportFailed) || errors.Is(err, connectrelay.ErrImportPending)):
			t.Errorf("%s: %v, want a retry", name, err)
		}
		if tc.wantMessage != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMessage)) {
			t.Errorf("%s: %v does not carry the backend's message %s", name, err, tc.wantMessage)
		}
		if ra, _ := product.RetryAfter(err); ra != tc.retryAfter {
			t.Errorf("%s: retry after %s, want %s", name, ra, tc.retryAfter)
		}
		if len(b.got) != 1 {
			t.Fatalf("%s: %d deliveries (a redirect must not be followed)", name, len(b.got))
		}
		id, m := verified(t, b.got[0])
		data := m["data"].(map[string]any)
		if id != UploadID("tr 1", "dir/file ü.json") || m["type"] != "migration.upload_ready" ||
			data["dataUrl"] != "http://127.0.0.1:8081/v1/migrations/tr%201/uploads/dir%2Ffile%20%C3%BC.json/data" ||
			data["resultUrl"] != "http://127.0.0.1:8081/v1/migrations/tr%201/uploads/dir%2Ffile%20%C3%BC.json/result" ||
			data["label"] != "final" || data["attempt"] != float64(3) ||
			data["tenant"].(map[string]any)["clientKey"] != "jira:ck1" {
			t.Fatalf("%s: id %q body %v", name, id, m)
		}
	}
}

func TestImport_ATimeoutRetries(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f, _ := newForwarder(t, func(w http.ResponseWriter) { <-release })
	f.cfg.Timeout = 200 * time.Millisecond
	start := time.Now()
	err := f.Import(context.Background(), &connectrelay.ImportRequest{Transfer: connectrelay.Transfer{TransferID: "t", ClientKey: "jira:ck1"}, S3Key: "k"})
	if err == nil || errors.Is(err, connectrelay.ErrImportFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want a retryable deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s for a 200ms timeout", d)
	}
}

func TestUploadID_IsStableAndDistinct(t *testing.T) {
	a, b := UploadID("t1", "k"), UploadID("t1", "k")
	if a != b || a == UploadID("t1", "k2") {
		t.Fatalf("%s %s", a, b)
	}
	if UploadID("t", "1k") == UploadID("t1", "k") {
		t.Fatal("transfer and s3Key run together")
	}
}

func TestNew_NamesTheMissingField(t *testing.T) {
	sec, _ := webhook.ParseSecret(testSecret)
	ok := Config{URL: "https://backend.example/hooks", Secret: sec, InternalURL: "http://127.0.0.1:8081", Tenants: tenants{}}
	tests := []struct {
		field  string
		mutate func(*Config)
	}{
		{"URL", func(c *Config) { c.URL = "backend.example" }},
		{"Secret", func(c *Config) { c.Secret = webhook.Secret{} }},
		{"InternalURL", func(c *Config) { c.InternalURL = "" }},
		{"Tenants", func(c *Config) { c.Tenants = nil }},
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		c := ok
		tc.mutate(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
}
