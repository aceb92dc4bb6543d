package product

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	forgeInstallation = "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5"
	forgeToken        = "forge-system-token-0123456789abcdef"
	forgeTransferID   = "53f88ea7-a2d2-4dd2-9f36-2d8c43401b11"
)

// staticForgeCreds answers credentials for forgeInstallation only.
type staticForgeCreds struct {
	mu    sync.Mutex
	creds ForgeCredentials
	err   error
}

func (s *staticForgeCreds) ForgeCredentials(_ context.Context, installationID string) (ForgeCredentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if installationID != forgeInstallation {
		return ForgeCredentials{}, fmt.Errorf("installation %s: %w", installationID, ErrNoSystemToken)
	}
	return s.creds, s.err
}

// forgeCall is one request the fake Forge API received.
type forgeCall struct {
	Method, Path, Query, Auth, Body string
}

// fakeForge plays the Forge migration API on loopback: it records every call
// and answers from handlers keyed by "METHOD escaped-path".
type fakeForge struct {
	srv *httptest.Server

	mu     sync.Mutex
	calls  []forgeCall
	routes map[string]http.HandlerFunc
}

func newFakeForge(t *testing.T) *fakeForge {
	f := &fakeForge{routes: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		key := r.Method + " " + r.URL.EscapedPath()
		f.mu.Lock()
		f.calls = append(f.calls, forgeCall{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Auth: r.Header.Get("Authorization"), Body: string(body)})
		h, ok := f.routes[key]
		f.mu.Unlock()
		if !ok {
			t.Errorf("unexpected Forge call %s", key)
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeForge) handle(key string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[key] = h
}

func (f *fakeForge) Calls() []forgeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]forgeCall(nil), f.calls...)
}

// setupForgeAMP is a ForgeAMP whose installation's apiBaseUrl is the fake
// API, with loopback explicitly allowed as tests need.
func setupForgeAMP(t *testing.T) (*ForgeAMP, *fakeForge, *staticForgeCreds) {
	t.Helper()
	f := newFakeForge(t)
	creds := &staticForgeCreds{creds: ForgeCredentials{
		APIBaseURL: f.srv.URL + "/ex/jira/d0d52620-3203-4cfa-8db5-f2587155f0dd", Token: forgeToken,
		ExpiresAt: time.Now().Add(2 * time.Hour),
	}}
	c, err := NewForgeAMP(ForgeAMPConfig{
		Credentials: creds,
		APIHosts:    []string{"127.0.0.1"},
		HTTP: Config{BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
	}, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("NewForgeAMP: %v", err)
	}
	return c, f, creds
}

func TestNewForgeAMPValidates(t *testing.T) {
	creds := &staticForgeCreds{}
	if _, err := NewForgeAMP(ForgeAMPConfig{}); err == nil {
		t.Error("nil credential source accepted")
	}
	for _, h := range []string{"api.atlassian.com/app", "*.atlassian.com", "user@api.atlassian.com", "api.atlassian.com:8443", " "} {
		if _, err := NewForgeAMP(ForgeAMPConfig{Credentials: creds, APIHosts: []string{h}}); err == nil {
			t.Errorf("API host %q accepted", h)
		}
	}
	if _, err := NewForgeAMP(ForgeAMPConfig{Credentials: creds, HTTP: Config{Jitter: 2}}); err == nil {
		t.Error("bad HTTP settings accepted")
	}
	c, err := NewForgeAMP(ForgeAMPConfig{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"api.atlassian.com"}, c.hosts); diff != "" {
		t.Errorf("default hosts (-want +got):\n%s", diff)
	}
}

func TestForgeAcknowledgeMessages(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	path := "/app/migration/forge/v1/message/" + forgeTransferID + "/status"
	f.handle("POST "+path, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	ids := make([]string, 150)
	for i := range ids {
		ids[i] = fmt.Sprintf("m-%03d", i)
	}
	if err := c.AcknowledgeMessages(t.Context(), forgeInstallation, forgeTransferID, MessageSuccess, ids); err != nil {
		t.Fatalf("AcknowledgeMessages: %v", err)
	}
	calls := f.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls, want 2 batches: %+v", len(calls), calls)
	}
	var got []string
	for _, call := range calls {
		if call.Auth != "Bearer "+forgeToken {
			t.Errorf("Authorization = %q, want the bearer system token", call.Auth)
		}
		var body struct {
			Status     string   `json:"status"`
			MessageIDs []string `json:"messageIds"`
		}
		if err := json.Unmarshal([]byte(call.Body), &body); err != nil {
			t.Fatalf("body %q: %v", call.Body, err)
		}
		if body.Status != "SUCCESS" {
			t.Errorf("status = %q", body.Status)
		}
		got = append(got, body.MessageIDs...)
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("messageIds sent (-want +got):\n%s", diff)
	}

	for _, bad := range []struct {
		status string
		ids    []string
	}{{"IN_PROGRESS", ids[:1]}, {"", ids[:1]}, {MessageFailed, nil}} {
		if err := c.AcknowledgeMessages(t.Context(), forgeInstallation, forgeTransferID, bad.status, bad.ids); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("AcknowledgeMessages(%q, %v) = %v, want ErrInvalidArgument", bad.status, bad.ids, err)
		}
	}
	if len(f.Calls()) != 2 {
		t.Error("an invalid acknowledgement reached the platform")
	}
}

func TestForgeSettledAnswerIs409(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	settled := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"message":"Transfer '`+forgeTransferID+`' is already in a settled state, no further actions are allowed"}`)
	}
	base := "/app/migration/forge/v1"
	f.handle("POST "+base+"/message/"+forgeTransferID+"/status", settled)
	f.handle("POST "+base+"/log/"+forgeTransferID, settled)
	f.handle("GET "+base+"/data/"+forgeTransferID+"/all", settled)
	f.handle("GET "+base+"/data/k1", settled)
	f.handle("GET "+base+"/mapping/"+forgeTransferID+"/page", settled)
	f.handle("POST "+base+"/mapping/"+forgeTransferID+"/find", settled)
	ctx := t.Context()
	_, mapErr := collect(c.Mappings(ctx, forgeInstallation, forgeTransferID, "jira:issue", 0))
	_, findErr := c.FindMappings(ctx, forgeInstallation, forgeTransferID, "jira:issue", []string{"1"})
	_, listErr := c.ListData(ctx, forgeInstallation, forgeTransferID)
	_, dataErr := c.OpenData(ctx, forgeInstallation, "k1")
	for name, err := range map[string]error{
		"ack":      c.AcknowledgeMessages(ctx, forgeInstallation, forgeTransferID, MessageFailed, []string{"m"}),
		"progress": c.ReportProgress(ctx, forgeInstallation, forgeTransferID, Progress{Status: StatusSuccess, Percent: 100}),
		"list":     listErr,
		"data":     dataErr,
		"mappings": mapErr,
		"find":     findErr,
	} {
		if !errors.Is(err, ErrTransferSettled) {
			t.Errorf("%s: err = %v, want ErrTransferSettled", name, err)
		}
		if err != nil && strings.Contains(err.Error(), forgeToken) {
			t.Errorf("%s: error leaks the token: %v", name, err)
		}
	}
	// A 409 is final: not retried.
	if n := len(f.Calls()); n != 6 {
		t.Errorf("%d calls, want 6 (no retries of a 409)", n)
	}
}

func TestForgeOtherStatusesAreNotSettled(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	path := "/app/migration/forge/v1/message/" + forgeTransferID + "/status"
	f.handle("POST "+path, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "Transfer is already in a settled state, token "+forgeToken)
	})
	err := c.AcknowledgeMessages(t.Context(), forgeInstallation, forgeTransferID, MessageSuccess, []string{"m"})
	if !errors.Is(err, ErrForbidden) || errors.Is(err, ErrTransferSettled) {
		t.Errorf("403 err = %v, want forbidden and not settled (Forge says 409)", err)
	}
	if strings.Contains(err.Error(), forgeToken) {
		t.Errorf("the error body echoing the token was not scrubbed: %v", err)
	}
}

func TestForgeTokenProblemsAreRetryable(t *testing.T) {
	c, f, creds := setupForgeAMP(t)
	path := "/app/migration/forge/v1/message/" + forgeTransferID + "/status"
	f.handle("POST "+path, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	ack := func() error {
		return c.AcknowledgeMessages(t.Context(), forgeInstallation, forgeTransferID, MessageSuccess, []string{"m"})
	}
	// Refused by the platform: the token expired early or was revoked.
	err := ack()
	if !errors.Is(err, ErrNoSystemToken) || Final(err) {
		t.Errorf("401: err = %v (final %v), want ErrNoSystemToken, not final", err, Final(err))
	}
	if len(f.Calls()) != 1 {
		t.Errorf("%d calls, want 1 (a 401 is not retried in the call)", len(f.Calls()))
	}

	cases := []struct {
		name  string
		creds ForgeCredentials
		err   error
	}{
		{"expired", ForgeCredentials{APIBaseURL: f.srv.URL, Token: forgeToken, ExpiresAt: time.Now().Add(-time.Minute)}, nil},
		{"expiring within the margin", ForgeCredentials{APIBaseURL: f.srv.URL, Token: forgeToken, ExpiresAt: time.Now().Add(10 * time.Second)}, nil},
		{"no token stored", ForgeCredentials{APIBaseURL: f.srv.URL}, nil},
		{"store says none", ForgeCredentials{}, fmt.Errorf("installation: %w", ErrNoSystemToken)},
	}
	for _, tc := range cases {
		creds.mu.Lock()
		creds.creds, creds.err = tc.creds, tc.err
		creds.mu.Unlock()
		err := ack()
		if !errors.Is(err, ErrNoSystemToken) || Final(err) {
			t.Errorf("%s: err = %v, want ErrNoSystemToken, not final", tc.name, err)
		}
		if strings.Contains(err.Error(), forgeToken) {
			t.Errorf("%s: error names the token: %v", tc.name, err)
		}
	}
	if len(f.Calls()) != 1 {
		t.Errorf("a call went out without a usable token: %+v", f.Calls())
	}
	// An unknown expiry is used until refused.
	creds.mu.Lock()
	creds.creds, creds.err = ForgeCredentials{APIBaseURL: f.srv.URL, Token: forgeToken}, nil
	creds.mu.Unlock()
	f.handle("POST "+path, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	if err := ack(); err != nil {
		t.Errorf("token without expiry: %v", err)
	}
}

func TestForgeAPIBaseURLIsChecked(t *testing.T) {
	c, f, creds := setupForgeAMP(t)
	for _, base := range []string{
		"https://evil.example.com/ex/jira/1",                     // not in FORGE_API_HOSTS
		"http://api.atlassian.com/ex/jira/1",                     // not listed, and http
		"ftp://127.0.0.1/x",                                      // scheme
		"https://user:pw@127.0.0.1/x",                            // userinfo
		"/ex/jira/1",                                             // relative
		"http://localhost" + f.srv.URL[len("http://127.0.0.1"):], // loopback not listed
	} {
		creds.mu.Lock()
		creds.creds = ForgeCredentials{APIBaseURL: base, Token: forgeToken}
		creds.mu.Unlock()
		err := c.AcknowledgeMessages(t.Context(), forgeInstallation, forgeTransferID, MessageSuccess, []string{"m"})
		if !errors.Is(err, ErrHostNotAllowed) {
			t.Errorf("apiBaseUrl %q: err = %v, want ErrHostNotAllowed", base, err)
		}
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("%d calls to a refused host", n)
	}
	// Production hosts: https only, default port, and no loopback download.
	prod, err := NewForgeAMP(ForgeAMPConfig{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	for base, ok := range map[string]bool{
		"https://api.atlassian.com/ex/jira/1":     true,
		"https://API.atlassian.com:443/ex/jira/1": true,
		"https://api.atlassian.com:8443/ex":       false,
		"http://api.atlassian.com/ex/jira/1":      false,
		f.srv.URL:                                 false,
	} {
		u, err := prod.checkAPIBaseURL(base)
		if (err == nil) != ok {
			t.Errorf("checkAPIBaseURL(%q) = %v, %v; want ok=%v", base, u, err, ok)
		}
		if ok && err == nil && (u.Path != "" || u.Host != "api.atlassian.com" && u.Host != "api.atlassian.com:443") {
			t.Errorf("checkAPIBaseURL(%q) = %s, want the origin only", base, u)
		}
	}
	if prod.guard.allowLoopback {
		t.Error("a production host list allows loopback downloads")
	}
	// Not an installation: refused before the source is asked.
	if err := c.AcknowledgeMessages(t.Context(), "jira:tenant", forgeTransferID, MessageSuccess, []string{"m"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Connect key: err = %v, want ErrInvalidArgument", err)
	}
}

func TestForgeOpenData(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/migration-bucket/k1" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "forge data")
	})
	// The key is one path segment, escaped.
	f.handle("GET /app/migration/forge/v1/data/transfer%2Fk%201", presignHandler(s3, "k1", "sig-1"))
	rc, err := c.OpenData(t.Context(), forgeInstallation, "transfer/k 1")
	if err != nil {
		t.Fatalf("OpenData: %v", err)
	}
	data, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(data) != "forge data" {
		t.Errorf("data = %q", data)
	}
	if calls := f.Calls(); len(calls) != 1 || calls[0].Auth != "Bearer "+forgeToken {
		t.Errorf("calls = %+v, want one bearer call", calls)
	}
	// fakeS3 fails the test if the token reached the storage.
	if diff := cmp.Diff([]string{"sig-1"}, s3.Hits()); diff != "" {
		t.Errorf("S3 hits (-want +got):\n%s", diff)
	}

	// A data URL inside the network is refused even on a loopback test host.
	f.handle("GET /app/migration/forge/v1/data/k2", jsonBody(200, map[string]string{"url": "https://169.254.169.254/latest?SIG=1"}))
	_, err = c.OpenData(t.Context(), forgeInstallation, "k2")
	assertRefused(t, "metadata address", err)
}

func TestForgeListData(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	f.handle("GET /app/migration/forge/v1/data/"+forgeTransferID+"/all",
		jsonBody(200, []map[string]string{{"key": "k1", "label": "part"}, {"s3Key": "k2", "label": "final"}}))
	got, err := c.ListData(t.Context(), forgeInstallation, forgeTransferID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Upload{{S3Key: "k1", Label: "part"}, {S3Key: "k2", Label: "final"}}, got); diff != "" {
		t.Errorf("ListData (-want +got):\n%s", diff)
	}
}

func TestForgeLogAndProgress(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	path := "/app/migration/forge/v1/log/" + forgeTransferID
	f.handle("POST "+path, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	ctx := t.Context()
	if err := c.ReportProgress(ctx, forgeInstallation, forgeTransferID, Progress{Status: StatusInProgress, Percent: 40, Message: "imported 2 of 5 uploads"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Log(ctx, forgeInstallation, forgeTransferID, strings.Repeat("é", forgeMaxLog)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReportProgress(ctx, forgeInstallation, forgeTransferID, Progress{Status: "DONE"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown status: %v", err)
	}
	calls := f.Calls()
	if len(calls) != 2 {
		t.Fatalf("calls = %+v", calls)
	}
	var body struct{ Message string }
	if err := json.Unmarshal([]byte(calls[0].Body), &body); err != nil || body.Message != "IN_PROGRESS 40%: imported 2 of 5 uploads" {
		t.Errorf("progress log body = %s (%v)", calls[0].Body, err)
	}
	if err := json.Unmarshal([]byte(calls[1].Body), &body); err != nil || len(body.Message) > forgeMaxLog {
		t.Errorf("long log message: %d bytes (%v), want at most %d", len(body.Message), err, forgeMaxLog)
	}
	d, err := c.ErrorDetails(ctx, forgeInstallation, forgeTransferID)
	if err != nil || string(d) != "null" {
		t.Errorf("ErrorDetails = %s, %v; want null", d, err)
	}
	if err := c.Feedback(ctx, forgeInstallation, forgeTransferID, map[string]string{"a": "b"}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Feedback = %v, want ErrNotSupported", err)
	}
}

func TestForgeMappings(t *testing.T) {
	c, f, _ := setupForgeAMP(t)
	var mu sync.Mutex
	var calls []string
	f.handle("GET /app/migration/forge/v1/mapping/"+forgeTransferID+"/page", mappingPages(t, &calls, &mu))
	got, err := collect(c.Mappings(t.Context(), forgeInstallation, forgeTransferID, "identity:user", 2))
	if err != nil {
		t.Fatalf("Mappings: %v", err)
	}
	if len(got) != 5 || len(calls) != 3 {
		t.Errorf("%d mappings in %d pages, want 5 in 3", len(got), len(calls))
	}
	// Forge pages are capped at 1200.
	const other = "6b0a1c2e-0000-4000-8000-000000000001"
	f.handle("GET /app/migration/forge/v1/mapping/"+other+"/page", jsonBody(200, map[string]any{"items": map[string]string{"1": "a"}}))
	if _, err := collect(c.Mappings(t.Context(), forgeInstallation, other, "jira:issue", 5000)); err != nil {
		t.Fatal(err)
	}
	if last := f.Calls()[len(f.Calls())-1]; !strings.Contains(last.Query, "pageSize=1200") {
		t.Errorf("page query %q, want pageSize=1200", last.Query)
	}
	f.handle("POST /app/migration/forge/v1/mapping/"+forgeTransferID+"/find", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("namespace") != "jira:issue" {
			t.Errorf("find namespace = %q", r.URL.Query().Get("namespace"))
		}
		var keys []string
		_ = json.NewDecoder(r.Body).Decode(&keys)
		out := map[string]string{}
		for _, k := range keys {
			out[k] = "cloud-" + k
		}
		jsonBody(200, out)(w, r)
	})
	found, err := c.FindMappings(t.Context(), forgeInstallation, forgeTransferID, "jira:issue", []string{"1", "2"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"1": "cloud-1", "2": "cloud-2"}, found); diff != "" {
		t.Errorf("FindMappings (-want +got):\n%s", diff)
	}
}

// collect drains a mapping iterator.
func collect(seq iter.Seq2[Mapping, error]) ([]Mapping, error) {
	var out []Mapping
	for m, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	return out, nil
}
