// Package producttest plays an Atlassian product site (Jira, or Confluence
// under "/wiki") for tests of code that calls the product REST API as the app.
//
// Its point is that the fake is strict where the real product is: every
// request must carry an "Authorization: JWT" header that verifies with
// connect's HS256Verifier against the tenant secret, with iss = the app key,
// exp = iat + 180 s and the qsh computed for the request relative to the
// site's base URL. A request that does not verify is answered 401 and fails
// the test, so tests exercise the real signing path rather than a mock of it.
package producttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/connect"
)

// Config describes the site.
type Config struct {
	// AppKey is the expected issuer of every token.
	AppKey string
	// Secret is the tenant's shared secret the tokens are signed with.
	Secret []byte
	// BasePath is the site's context path: "" for Jira, "/wiki" for Confluence.
	BasePath string
	// Handler answers verified requests; nil answers 204.
	Handler http.Handler
}

// Request is one verified request as the site received it.
type Request struct {
	Method string
	// Path is the raw path as received (r.URL.EscapedPath()), base path included.
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte
	// Token is the raw JWT, so tests can check it never leaks.
	Token  string
	Claims *connect.Claims
	At     time.Time
}

// Server is a running fake site. Close it or let the test's cleanup do it.
type Server struct {
	t        testing.TB
	cfg      Config
	srv      *httptest.Server
	verifier *connect.HS256Verifier

	mu      sync.Mutex
	reqs    []Request
	handler http.Handler
}

// appKeySecrets answers the verifier's secret lookups: on outbound calls the
// issuer is the app key, and the secret is the tenant's.
type appKeySecrets struct {
	appKey string
	secret []byte
}

// SharedSecret returns the tenant secret for the app key and refuses any other issuer.
func (s appKeySecrets) SharedSecret(_ context.Context, iss string, _ bool) ([]byte, error) {
	if iss != s.appKey {
		return nil, fmt.Errorf("issuer %q is not the app key: %w", iss, connect.ErrUnknownIssuer)
	}
	return s.secret, nil
}

// New starts a site on 127.0.0.1 and closes it when the test ends.
func New(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := &Server{t: t, cfg: cfg, handler: cfg.Handler}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	v, err := connect.NewHS256Verifier(connect.HS256Config{
		AppBaseURLs: []string{s.BaseURL()},
		Secrets:     appKeySecrets{appKey: cfg.AppKey, secret: cfg.Secret},
		Leeway:      30 * time.Second,
		Now:         time.Now,
	})
	if err != nil {
		t.Fatalf("producttest: NewHS256Verifier: %v", err)
	}
	s.verifier = v
	return s
}

// BaseURL is the tenant baseUrl of the site, context path included.
func (s *Server) BaseURL() string { return s.srv.URL + s.cfg.BasePath }

// Origin is the scheme://host:port of the site.
func (s *Server) Origin() string { return s.srv.URL }

// Close stops the site; later calls get connection refused.
func (s *Server) Close() { s.srv.Close() }

// SetHandler replaces the handler for verified requests.
func (s *Server) SetHandler(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Requests returns the verified requests received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.t.Errorf("producttest: %s %s: read body: %v", r.Method, r.URL.Path, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "JWT ") {
		s.t.Errorf("producttest: %s %s arrived without an Authorization: JWT header", r.Method, r.URL.Path)
		http.Error(w, "missing jwt", http.StatusUnauthorized)
		return
	}
	claims, err := s.verifier.Verify(r.Context(), r, connect.QSHComputed)
	if err != nil {
		s.t.Errorf("producttest: %s %s: JWT does not verify: %v", r.Method, r.URL.Path, err)
		http.Error(w, "invalid jwt", http.StatusUnauthorized)
		return
	}
	if claims.Issuer != s.cfg.AppKey {
		s.t.Errorf("producttest: iss = %q, want the app key %q", claims.Issuer, s.cfg.AppKey)
	}
	if d := claims.ExpiresAt.Sub(claims.IssuedAt); d != 180*time.Second {
		s.t.Errorf("producttest: exp - iat = %s, want 3m0s", d)
	}
	if want := connect.QSH(r.Method, r.URL, s.cfg.BasePath); claims.QSH != want {
		s.t.Errorf("producttest: qsh = %q, want %q", claims.QSH, want)
	}
	rec := Request{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
		Token:    strings.TrimPrefix(auth, "JWT "),
		Claims:   claims,
		At:       time.Now(),
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	h := s.handler
	s.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if h == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.ServeHTTP(w, r)
}

// JSON is a handler answering status with a fixed JSON body.
func JSON(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}
