package connect

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fixedClock returns a Now func stuck at t.
func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// mutableClock is a settable clock for TTL tests.
type mutableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mutableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mutableClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// scriptedSecrets is a SecretStore whose answers the test controls: the secret
// for refresh=false and refresh=true separately, and counts of each call.
type scriptedSecrets struct {
	cached, fresh map[string][]byte
	err           error
	calls         atomic.Int32
	refreshes     atomic.Int32
}

func (s *scriptedSecrets) SharedSecret(_ context.Context, clientKey string, refresh bool) ([]byte, error) {
	s.calls.Add(1)
	if refresh {
		s.refreshes.Add(1)
	}
	if s.err != nil {
		return nil, s.err
	}
	m := s.cached
	if refresh && s.fresh != nil {
		m = s.fresh
	}
	sec, ok := m[clientKey]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", clientKey, ErrUnknownIssuer)
	}
	return sec, nil
}

func staticSecrets(clientKey string, secret []byte) *scriptedSecrets {
	return &scriptedSecrets{cached: map[string][]byte{clientKey: secret}}
}

// signHS256 signs claims with golang-jwt (header {"alg":"HS256","typ":"JWT"}).
func signHS256(t testing.TB, claims jwt.MapClaims, secret []byte) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRS256 signs claims with key, putting kid in the header when non-empty.
func signRS256(t testing.TB, claims jwt.MapClaims, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken assembles a token from a literal header and claims and a
// signature function, for attacks golang-jwt refuses to sign.
func rawToken(header string, claims any, sign func(signingInput string) []byte) string {
	c, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(c)
	var sig []byte
	if sign != nil {
		sig = sign(in)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
	otherKey    *rsa.PrivateKey
)

// testKeys returns two RSA 2048 keys shared by the test binary (key
// generation is slow on the 2-core machines).
func testKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	testKeyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKey, otherKey
}

func publicPEM(t testing.TB, pub *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// staticKeys is a KeyProvider with a fixed kid -> key map.
type staticKeys map[string]*rsa.PublicKey

func (s staticKeys) PublicKey(_ context.Context, kid, _ string) (*rsa.PublicKey, error) {
	if k, ok := s[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownKey, kid)
}

// keyServerStub serves PEM keys at /{kid} and counts requests.
type keyServerStub struct {
	*httptest.Server
	mu       sync.Mutex
	keys     map[string][]byte
	status   int           // when non-zero, answer this status for every kid
	delay    time.Duration // sleep before answering
	requests atomic.Int32
	paths    []string
}

func newKeyServerStub(t testing.TB, keys map[string][]byte) *keyServerStub {
	t.Helper()
	s := &keyServerStub{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *keyServerStub) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	s.paths = append(s.paths, r.URL.RequestURI())
	status, delay := s.status, s.delay
	body, ok := s.keys[strings.TrimPrefix(r.URL.Path, "/")]
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case status != 0:
		w.WriteHeader(status)
	case !ok:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(body)
	}
}

func (s *keyServerStub) setStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

func (s *keyServerStub) requestPaths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

// newRequest builds an inbound request as the server would see it, with the
// token in the Authorization header when tok is non-empty.
func newRequest(t testing.TB, method, target, tok string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if tok != "" {
		r.Header.Set("Authorization", "JWT "+tok)
	}
	return r
}

// assertIs fails unless err wraps want. It also checks that the message never
// carries a token (JWS segments start with "eyJ").
func assertIs(t testing.TB, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want errors.Is(err, %v)", err, want)
	}
	if strings.Contains(err.Error(), "eyJ") {
		t.Errorf("error message contains a token: %v", err)
	}
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
