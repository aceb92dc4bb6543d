package product

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/product/producttest"
)

const (
	testAppKey    = "com.example.relay-test"
	testClientKey = "jira:11111111-2222-3333-4444-555555555555"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-tenant-secret")

func newFakeProduct(t *testing.T, basePath string, h http.Handler) *producttest.Server {
	t.Helper()
	return producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret, BasePath: basePath, Handler: h})
}

// targets is a TargetSource whose tenant can be renamed mid-test.
type targets struct {
	mu    sync.Mutex
	m     map[string]Target
	calls int
}

func newTargets(baseURL string) *targets {
	return &targets{m: map[string]Target{testClientKey: {ClientKey: testClientKey, BaseURL: baseURL, Secret: testSecret}}}
}

func (ts *targets) Target(_ context.Context, clientKey string) (Target, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.calls++
	t, ok := ts.m[clientKey]
	if !ok {
		return Target{}, fmt.Errorf("tenant %s not found", clientKey)
	}
	return t, nil
}

func (ts *targets) SetBaseURL(clientKey, baseURL string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := ts.m[clientKey]
	t.BaseURL = baseURL
	ts.m[clientKey] = t
}

// observation is one call of Config.Observe.
type observation struct {
	Method, Route string
	Status        int
	Failed        bool
}

type observer struct {
	mu  sync.Mutex
	obs []observation
}

func (o *observer) Observe(method, route string, status int, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obs = append(o.obs, observation{Method: method, Route: route, Status: status, Failed: err != nil})
}

func (o *observer) All() []observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]observation(nil), o.obs...)
}

// countingTransport counts round trips, to prove that refused calls never
// reach the network.
type countingTransport struct {
	mu sync.Mutex
	n  int
	rt http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.rt.RoundTrip(r)
}

func (c *countingTransport) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type testBundle struct {
	product   *producttest.Server
	targets   *targets
	observer  *observer
	transport *countingTransport
}

func loopbackPolicy(t *testing.T) *connect.HostPolicy {
	t.Helper()
	p, err := connect.NewHostPolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatalf("NewHostPolicy: %v", err)
	}
	return p
}

// setup starts a fake product under basePath and a Client for it with fast
// retries; mutate adjusts the Config before New.
func setup(t *testing.T, basePath string, mutate func(*Config)) (*Client, *testBundle) {
	t.Helper()
	b := &testBundle{
		product:   newFakeProduct(t, basePath, nil),
		observer:  &observer{},
		transport: &countingTransport{rt: http.DefaultTransport},
	}
	b.targets = newTargets(b.product.BaseURL())
	cfg := Config{
		AppKey:      testAppKey,
		Hosts:       loopbackPolicy(t),
		HTTPClient:  &http.Client{Transport: b.transport},
		BackoffBase: time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observe:     b.observer.Observe,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg, b.targets)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, b
}

func jsonHandler(status int, body string) http.Handler { return producttest.JSON(status, body) }

func TestDoSignsRequests(t *testing.T) {
	tests := []struct {
		name     string
		basePath string
		req      Request
		wantPath string
		wantBody string
	}{
		{
			name:     "GET with query, Jira base",
			basePath: "",
			req: Request{
				Path:  "/rest/api/3/search",
				Query: map[string][]string{"jql": {"project = ABC order by key"}, "fields": {"summary", "status"}, "x": {""}},
			},
			wantPath: "/rest/api/3/search",
		},
		{
			name:     "GET under Confluence /wiki",
			basePath: "/wiki",
			req:      Request{Path: "/rest/atlassian-connect/1/addons/" + testAppKey, Route: "/rest/atlassian-connect/1/addons/{appKey}"},
			wantPath: "/wiki/rest/atlassian-connect/1/addons/" + testAppKey,
		},
		{
			name:     "POST JSON under /wiki with an escaped segment",
			basePath: "/wiki",
			req: Request{
				Method: http.MethodPost,
				Path:   "/rest/atlassian-connect/1/migration/data/a%2Fb%20c&d",
				Body:   map[string]any{"status": "IN_PROGRESS", "percent": 5},
			},
			wantPath: "/wiki/rest/atlassian-connect/1/migration/data/a%2Fb%20c&d",
			wantBody: `{"percent":5,"status":"IN_PROGRESS"}`,
		},
		{
			name:     "PUT JSON, base URL with trailing slash",
			basePath: "/wiki/",
			req:      Request{Method: "put", Path: "/rest/atlassian-connect/1/migration/webhook", Body: []string{"https://app.example.com/migration/events"}},
			wantPath: "/wiki/rest/atlassian-connect/1/migration/webhook",
			wantBody: `["https://app.example.com/migration/events"]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setup(t, tt.basePath, nil)
			b.product.SetHandler(jsonHandler(200, `{"key":"value"}`))
			var out struct{ Key string }
			if err := c.Do(t.Context(), testClientKey, tt.req, &out); err != nil {
				t.Fatalf("Do: %v", err)
			}
			if out.Key != "value" {
				t.Errorf("decoded Key = %q, want %q", out.Key, "value")
			}
			reqs := b.product.Requests()
			if len(reqs) != 1 {
				t.Fatalf("product saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Path != tt.wantPath {
				t.Errorf("path = %q, want %q", r.Path, tt.wantPath)
			}
			if got, want := r.RawQuery, tt.req.Query.Encode(); got != want {
				t.Errorf("query = %q, want %q", got, want)
			}
			if r.Header.Get("Accept") != "application/json" {
				t.Errorf("Accept = %q, want application/json", r.Header.Get("Accept"))
			}
			if !strings.HasPrefix(r.Header.Get("User-Agent"), "connectrelay/") || !strings.HasSuffix(r.Header.Get("User-Agent"), " "+testAppKey) {
				t.Errorf("User-Agent = %q, want connectrelay/<version> %s", r.Header.Get("User-Agent"), testAppKey)
			}
			if tt.wantBody == "" {
				if len(r.Body) != 0 || r.Header.Get("Content-Type") != "" {
					t.Errorf("%s carried body %q with Content-Type %q, want none", r.Method, r.Body, r.Header.Get("Content-Type"))
				}
			} else {
				if string(r.Body) != tt.wantBody {
					t.Errorf("body = %s, want %s", r.Body, tt.wantBody)
				}
				if r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", r.Header.Get("Content-Type"))
				}
			}
		})
	}
}

func TestDoRetriesServerErrors(t *testing.T) {
	var n int
	var mu sync.Mutex
	clock := time.Now().Truncate(time.Second)
	c, b := setup(t, "/wiki", func(cfg *Config) {
		cfg.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			clock = clock.Add(time.Second)
			return clock
		}
	})
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		attempt := n
		mu.Unlock()
		if attempt < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		jsonHandler(200, `{"ok":true}`).ServeHTTP(w, r)
	}))
	var out struct{ OK bool }
	req := Request{Path: "/rest/api/thing/42", Route: "/rest/api/thing/{id}"}
	if err := c.Do(t.Context(), testClientKey, req, &out); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if !out.OK {
		t.Error("response not decoded")
	}
	reqs := b.product.Requests()
	if len(reqs) != 3 {
		t.Fatalf("attempts = %d, want 3", len(reqs))
	}
	// Every attempt is signed afresh: a distinct token whose iat is the clock
	// at that attempt.
	tokens := map[string]bool{}
	var lastIat time.Time
	for i, r := range reqs {
		tokens[r.Token] = true
		iat := r.Claims.IssuedAt
		if i > 0 && !iat.After(lastIat) {
			t.Errorf("attempt %d iat %v not after previous %v", i+1, iat, lastIat)
		}
		lastIat = iat
	}
	if len(tokens) != 3 {
		t.Errorf("%d distinct tokens over 3 attempts, want 3", len(tokens))
	}
	want := []observation{
		{Method: "GET", Route: "/rest/api/thing/{id}", Status: 503, Failed: true},
		{Method: "GET", Route: "/rest/api/thing/{id}", Status: 503, Failed: true},
		{Method: "GET", Route: "/rest/api/thing/{id}", Status: 200},
	}
	if diff := cmp.Diff(want, b.observer.All()); diff != "" {
		t.Errorf("observations (-want +got):\n%s", diff)
	}
}

func TestDoGivesUpAfterMaxAttempts(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   error
	}{
		{"503", http.StatusServiceUnavailable, ErrServer},
		{"500", http.StatusInternalServerError, ErrServer},
		{"429", http.StatusTooManyRequests, ErrRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setup(t, "", func(cfg *Config) { cfg.MaxAttempts = 3 })
			b.product.SetHandler(jsonHandler(tt.status, `{"message":"nope"}`))
			err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			se, ok := errors.AsType[*StatusError](err)
			if !ok || se.StatusCode != tt.status || se.Body != `{"message":"nope"}` {
				t.Errorf("StatusError = %+v", se)
			}
			if n := len(b.product.Requests()); n != 3 {
				t.Errorf("attempts = %d, want 3", n)
			}
		})
	}
}

func TestDoHonoursRetryAfter(t *testing.T) {
	c, b := setup(t, "", nil)
	var mu sync.Mutex
	n := 0
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil); err != nil {
		t.Fatalf("Do: %v", err)
	}
	reqs := b.product.Requests()
	if len(reqs) != 2 {
		t.Fatalf("attempts = %d, want 2", len(reqs))
	}
	// BackoffBase is 1 ms: only Retry-After explains a gap of a second.
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 950*time.Millisecond || gap > 3*time.Second {
		t.Errorf("gap between attempts = %s, want about 1s (Retry-After: 1)", gap)
	}
}

func TestDoRetryAfterBeyondCapIsRetryLater(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.MaxRetryAfter = 2 * time.Second })
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	start := time.Now()
	err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
	if time.Since(start) > time.Second {
		t.Errorf("Do slept %s instead of returning", time.Since(start))
	}
	if _, ok := errors.AsType[*RetryLaterError](err); !ok {
		t.Fatalf("err = %v, want *RetryLaterError", err)
	}
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("errors.Is(%v, ErrRateLimited) = false", err)
	}
	if d, ok := RetryAfter(err); !ok || d != 120*time.Second {
		t.Errorf("RetryAfter = %s, %v; want 2m0s, true", d, ok)
	}
	if n := len(b.product.Requests()); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

func TestDoDoesNotRetryClientErrors(t *testing.T) {
	tests := []struct {
		status int
		want   error
	}{
		{http.StatusUnauthorized, ErrUnauthorized},
		{http.StatusForbidden, ErrForbidden},
		{http.StatusNotFound, ErrNotFound},
		{http.StatusBadRequest, ErrBadRequest},
		{http.StatusUnprocessableEntity, ErrBadRequest},
		{http.StatusConflict, nil},
	}
	sentinels := []error{ErrUnauthorized, ErrForbidden, ErrNotFound, ErrBadRequest, ErrRateLimited, ErrServer, ErrUnavailable, ErrHostNotAllowed}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			c, b := setup(t, "", nil)
			b.product.SetHandler(jsonHandler(tt.status, `{}`))
			err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
			if err == nil {
				t.Fatal("Do succeeded on", tt.status)
			}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if n := len(b.product.Requests()); n != 1 {
				t.Errorf("attempts = %d, want 1 (no retry of %d)", n, tt.status)
			}
		})
	}
}

func TestStatusErrorBodyIsTruncatedAndNeverHoldsTheToken(t *testing.T) {
	c, b := setup(t, "", nil)
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		// A product that echoes the header it refused, then lots of noise.
		fmt.Fprintf(w, "bad token %s; ", r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, strings.Repeat("é", 2000))
	}))
	err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
	se, ok := errors.AsType[*StatusError](err)
	if !ok {
		t.Fatalf("err = %v, want *StatusError", err)
	}
	token := b.product.Requests()[0].Token
	if strings.Contains(se.Body, token) || strings.Contains(err.Error(), token) {
		t.Error("error carries the JWT")
	}
	if !strings.HasPrefix(se.Body, "bad token JWT [redacted]; é") {
		t.Errorf("body starts %q", se.Body[:min(len(se.Body), 40)])
	}
	if len(se.Body) > 1024 || len(se.Body) < 1000 {
		t.Errorf("len(Body) = %d, want at most 1024 and close to it", len(se.Body))
	}
	if !strings.HasSuffix(se.Body, "é") {
		t.Errorf("body truncated inside a rune: %q", se.Body[len(se.Body)-4:])
	}
}

func TestDoFollowsTheRenamedSite(t *testing.T) {
	c, b := setup(t, "", nil)
	renamed := newFakeProduct(t, "/wiki", jsonHandler(200, `{}`))
	if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/a"}, nil); err != nil {
		t.Fatalf("Do before rename: %v", err)
	}
	b.targets.SetBaseURL(testClientKey, renamed.BaseURL())
	if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/b"}, nil); err != nil {
		t.Fatalf("Do after rename: %v", err)
	}
	if got := len(b.product.Requests()); got != 1 {
		t.Errorf("old site saw %d requests, want 1", got)
	}
	got := renamed.Requests()
	if len(got) != 1 || got[0].Path != "/wiki/rest/b" {
		t.Errorf("renamed site saw %+v, want one GET /wiki/rest/b", got)
	}
}

func TestDoRefusesDisallowedHosts(t *testing.T) {
	tests := []struct {
		name, baseURL string
	}{
		{"foreign host", "https://evil.example.com"},
		{"plain http off loopback", "http://site.atlassian.net"},
		{"webhook-named host", "https://attacker.test/wiki"},
		{"not a URL", "::::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setup(t, "", func(cfg *Config) {
				p, err := connect.NewHostPolicy([]string{"127.0.0.1", "*.atlassian.net"})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Hosts = p
			})
			b.targets.SetBaseURL(testClientKey, tt.baseURL)
			err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
			if !errors.Is(err, ErrHostNotAllowed) || !errors.Is(err, connect.ErrProductHostNotAllowed) {
				t.Fatalf("err = %v, want ErrHostNotAllowed wrapping connect.ErrProductHostNotAllowed", err)
			}
			if n := b.transport.Count(); n != 0 {
				t.Errorf("%d requests went out, want none", n)
			}
			if n := len(b.observer.All()); n != 1 {
				t.Errorf("%d attempts observed, want 1 (no retry)", n)
			}
		})
	}
}

func TestDoRespectsContextDeadline(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.AttemptTimeout = 5 * time.Second })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Do(ctx, testClientKey, Request{Path: "/rest/slow"}, nil)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("Do took %s with a 200ms deadline", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v: the caller's deadline is not an outage", err)
	}
	if n := len(b.product.Requests()); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

func TestDoStopsWhenBackoffPassesDeadline(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.BackoffBase, cfg.BackoffMax, cfg.Jitter = 5*time.Second, 5*time.Second, -1 })
	b.product.SetHandler(jsonHandler(http.StatusBadGateway, ""))
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	err := c.Do(ctx, testClientKey, Request{Path: "/rest/x"}, nil)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Do waited %s for a retry it could not make", took)
	}
	if !errors.Is(err, ErrServer) {
		t.Errorf("err = %v, want ErrServer", err)
	}
	if n := len(b.product.Requests()); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

func TestDoAttemptTimeoutIsRetried(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.AttemptTimeout = 150 * time.Millisecond })
	var mu sync.Mutex
	n := 0
	b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil); err != nil {
		t.Fatalf("Do: %v", err)
	}
	obs := b.observer.All()
	if len(obs) != 2 || obs[0].Status != 0 || !obs[0].Failed || obs[1].Status != 204 {
		t.Errorf("observations = %+v, want a failed attempt without status, then 204", obs)
	}
}

func TestDoNetworkFailureIsUnavailable(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.MaxAttempts = 3 })
	b.product.Close() // connection refused from now on
	err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if n := b.transport.Count(); n != 3 {
		t.Errorf("round trips = %d, want 3", n)
	}
}

func TestDoRedirectPolicy(t *testing.T) {
	t.Run("same-origin GET redirect is re-signed and followed", func(t *testing.T) {
		c, b := setup(t, "/wiki", nil)
		b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/wiki/rest/old" {
				http.Redirect(w, r, "/wiki/rest/new?page=2", http.StatusFound)
				return
			}
			jsonHandler(200, `{"at":"new"}`).ServeHTTP(w, r)
		}))
		var out struct{ At string }
		if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/old"}, &out); err != nil {
			t.Fatalf("Do: %v", err)
		}
		reqs := b.product.Requests()
		if len(reqs) != 2 || reqs[1].Path != "/wiki/rest/new" || reqs[1].RawQuery != "page=2" || out.At != "new" {
			t.Errorf("requests %+v, out %+v", reqs, out)
		}
		if reqs[0].Token == reqs[1].Token {
			t.Error("redirect reused the first token (its qsh is for the old path)")
		}
	})
	t.Run("other origin is never sent the token", func(t *testing.T) {
		c, b := setup(t, "", nil)
		// Another allowed loopback "site": a renamed tenant's new home.
		other := newFakeProduct(t, "", jsonHandler(200, `{}`))
		b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.BaseURL()+"/rest/x", http.StatusMovedPermanently)
		}))
		err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
		if !errors.Is(err, ErrRedirectNotFollowed) {
			t.Fatalf("err = %v, want ErrRedirectNotFollowed", err)
		}
		re, ok := errors.AsType[*RedirectError](err)
		if !ok || re.Location != other.BaseURL()+"/rest/x" || re.StatusCode != 301 {
			t.Errorf("RedirectError = %+v", re)
		}
		if n := len(other.Requests()); n != 0 {
			t.Errorf("other origin received %d requests", n)
		}
		if n := len(b.product.Requests()); n != 1 {
			t.Errorf("attempts = %d, want 1 (a redirect is not retried)", n)
		}
	})
	t.Run("POST is not turned into a GET by 302", func(t *testing.T) {
		c, b := setup(t, "", nil)
		b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/rest/elsewhere", http.StatusFound)
		}))
		err := c.Do(t.Context(), testClientKey, Request{Method: "POST", Path: "/rest/x", Body: map[string]int{"a": 1}}, nil)
		if !errors.Is(err, ErrRedirectNotFollowed) {
			t.Fatalf("err = %v, want ErrRedirectNotFollowed", err)
		}
		if n := len(b.product.Requests()); n != 1 {
			t.Errorf("requests = %d, want 1", n)
		}
	})
	t.Run("POST follows 307 with its body", func(t *testing.T) {
		c, b := setup(t, "", nil)
		b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/rest/x" {
				http.Redirect(w, r, "/rest/y", http.StatusTemporaryRedirect)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		if err := c.Do(t.Context(), testClientKey, Request{Method: "POST", Path: "/rest/x", Body: map[string]int{"a": 1}}, nil); err != nil {
			t.Fatalf("Do: %v", err)
		}
		reqs := b.product.Requests()
		if len(reqs) != 2 || reqs[1].Method != "POST" || reqs[1].Path != "/rest/y" || string(reqs[1].Body) != `{"a":1}` {
			t.Errorf("requests = %+v", reqs)
		}
	})
	t.Run("redirect loop ends", func(t *testing.T) {
		c, b := setup(t, "", nil)
		b.product.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		}))
		err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil)
		if !errors.Is(err, ErrRedirectNotFollowed) {
			t.Fatalf("err = %v, want ErrRedirectNotFollowed", err)
		}
		if n := len(b.product.Requests()); n != maxRedirects+1 {
			t.Errorf("requests = %d, want %d", n, maxRedirects+1)
		}
	})
}

func TestDoRefusesBadRequestsLocally(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"GET with body", Request{Path: "/rest/x", Body: map[string]int{"a": 1}}},
		{"relative path", Request{Path: "rest/x"}},
		{"scheme-relative path", Request{Path: "//evil.example.com/rest"}},
		{"dot segments", Request{Path: "/rest/../../admin"}},
		{"query in path", Request{Path: "/rest/x?jwt=abc"}},
		{"bad escape", Request{Path: "/rest/%zz"}},
		{"unencodable body", Request{Method: "POST", Path: "/rest/x", Body: func() {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setup(t, "", nil)
			if err := c.Do(t.Context(), testClientKey, tt.req, nil); err == nil {
				t.Fatal("Do accepted the request")
			}
			if n := b.transport.Count(); n != 0 {
				t.Errorf("%d requests went out", n)
			}
		})
	}
}

func TestDoLimitsResponseSize(t *testing.T) {
	c, b := setup(t, "", func(cfg *Config) { cfg.MaxResponseBytes = 1024 })
	b.product.SetHandler(jsonHandler(200, `{"pad":"`+strings.Repeat("x", 2048)+`"}`))
	var out map[string]string
	err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, &out)
	if !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("err = %v, want ErrResponseTooLarge", err)
	}
	if out != nil {
		t.Errorf("out = %v, want untouched", out)
	}
}

func TestDoTenantProblems(t *testing.T) {
	c, b := setup(t, "", nil)
	if err := c.Do(t.Context(), "jira:unknown", Request{Path: "/rest/x"}, nil); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown tenant: err = %v", err)
	}
	b.targets.mu.Lock()
	b.targets.m[testClientKey] = Target{ClientKey: testClientKey, BaseURL: b.product.BaseURL()}
	b.targets.mu.Unlock()
	if err := c.Do(t.Context(), testClientKey, Request{Path: "/rest/x"}, nil); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: err = %v, want ErrNoSecret", err)
	}
	if n := b.transport.Count(); n != 0 {
		t.Errorf("%d requests went out", n)
	}
}

func TestNewValidates(t *testing.T) {
	hosts := loopbackPolicy(t)
	ts := newTargets("http://127.0.0.1")
	tests := []struct {
		name string
		cfg  Config
		src  TargetSource
	}{
		{"no app key", Config{Hosts: hosts}, ts},
		{"no hosts", Config{AppKey: testAppKey}, ts},
		{"no targets", Config{AppKey: testAppKey, Hosts: hosts}, nil},
		{"negative attempts", Config{AppKey: testAppKey, Hosts: hosts, MaxAttempts: -1}, ts},
		{"jitter above 1", Config{AppKey: testAppKey, Hosts: hosts, Jitter: 1.5}, ts},
		{"max below base", Config{AppKey: testAppKey, Hosts: hosts, BackoffBase: time.Second, BackoffMax: time.Millisecond}, ts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.src); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
	c, err := New(Config{AppKey: testAppKey, Hosts: hosts}, ts)
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if c.cfg.MaxAttempts != 4 || c.cfg.AttemptTimeout != 10*time.Second || c.cfg.MaxRetryAfter != 30*time.Second ||
		c.cfg.MaxResponseBytes != 4<<20 || c.cfg.Jitter != 0.2 || c.cfg.BackoffBase != 500*time.Millisecond ||
		!strings.HasPrefix(c.cfg.UserAgent, "connectrelay/") || !strings.HasSuffix(c.cfg.UserAgent, " "+testAppKey) {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 30 ", 30 * time.Second},
		{"99999999", 24 * time.Hour},
		{"Sun, 01 Mar 2026 12:00:45 GMT", 45 * time.Second},
		{"Sun, 01 Mar 2026 11:59:00 GMT", 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, Jitter: 0.2}}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 40: time.Second} {
		for range 50 {
			got := c.backoff(attempt)
			lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2)
			if got < lo || got > hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", attempt, got, lo, hi)
			}
		}
	}
	c.cfg.Jitter = 0
	if got := c.backoff(3); got != 400*time.Millisecond {
		t.Errorf("backoff(3) without jitter = %s, want 400ms", got)
	}
}
