// Package atlassiantest plays Atlassian's side of the protocol in tests: an
// install public-key server (the CDN serving PEM keys by kid) and the lifecycle
// and webhook requests a product sends, signed exactly as Atlassian signs them
// (RS256 signed installs, HS256 with the tenant's shared secret, computed qsh).
package atlassiantest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

// KID is the key id the fake key server serves.
const KID = "test-install-key/2026-11"

// Atlassian is the fake: its key server and its signing key.
type Atlassian struct {
	Key       *rsa.PrivateKey
	KeyServer *httptest.Server
	fetches   atomic.Int64
	// Now is the clock used for iat/exp of minted tokens.
	Now func() time.Time
}

// sharedKey is generated once per test binary (2048-bit generation is slow) and
// shared by every fake; the Once keeps parallel tests from racing on it.
var (
	sharedKey     *rsa.PrivateKey
	sharedKeyErr  error
	sharedKeyOnce sync.Once
)

// New starts a key server on loopback serving the public key at /{KID}; it is
// closed when the test ends.
func New(t testing.TB) *Atlassian {
	t.Helper()
	sharedKeyOnce.Do(func() { sharedKey, sharedKeyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if sharedKeyErr != nil {
		t.Fatalf("generate RSA key: %v", sharedKeyErr)
	}
	a := &Atlassian{Key: sharedKey, Now: time.Now}
	der, err := x509.MarshalPKIXPublicKey(&a.Key.PublicKey)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	a.KeyServer = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.fetches.Add(1)
		if strings.TrimPrefix(r.URL.Path, "/") != KID {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(pemBytes)
	}))
	t.Cleanup(a.KeyServer.Close)
	return a
}

// KeyFetches is how many requests the key server has answered.
func (a *Atlassian) KeyFetches() int64 { return a.fetches.Load() }

// InstallBody is an installed body as Atlassian sends it.
func InstallBody(clientKey, baseURL, secret, appKey string) map[string]any {
	return map[string]any{
		"key":            appKey,
		"clientKey":      clientKey,
		"sharedSecret":   secret,
		"serverVersion":  "100223",
		"pluginsVersion": "1001.0.0-SNAPSHOT",
		"baseUrl":        baseURL,
		"displayUrl":     baseURL,
		"productType":    "jira",
		"description":    "Atlassian JIRA at " + baseURL,
		"eventType":      "installed",
	}
}

// Token describes a JWT to mint; zero fields get Atlassian's defaults.
type Token struct {
	Alg       string // RS256 (default for installs) or HS256
	KID       string // default KID for RS256; "-" for none
	Issuer    string
	Audience  string // RS256 default: the app base URL given to the request helpers
	QSH       string // default: computed for the request
	IssuedAt  time.Time
	ExpiresAt time.Time
	Secret    []byte // HS256 key
	// SignWith, when set, replaces the signing key entirely (attack tests).
	SignWith any
}

// Request builds a POST of body to appBaseURL+path carrying the token.
func (a *Atlassian) Request(t testing.TB, appBaseURL, path string, body any, tok Token) *http.Request {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatalf("marshal body: %v", err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, appBaseURL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok.Alg != "none-at-all" {
		req.Header.Set("Authorization", "JWT "+a.Sign(t, req, appBaseURL, tok))
	}
	return req
}

// Sign mints the token for req.
func (a *Atlassian) Sign(t testing.TB, req *http.Request, appBaseURL string, tok Token) string {
	t.Helper()
	now := a.Now()
	if tok.Alg == "" {
		tok.Alg = "RS256"
	}
	if tok.IssuedAt.IsZero() {
		tok.IssuedAt = now
	}
	if tok.ExpiresAt.IsZero() {
		tok.ExpiresAt = tok.IssuedAt.Add(3 * time.Minute)
	}
	if tok.QSH == "" {
		base, err := url.Parse(appBaseURL)
		if err != nil {
			t.Fatalf("parse app base URL: %v", err)
		}
		tok.QSH = connect.QSH(req.Method, req.URL, base.Path)
	}
	claims := jwt.MapClaims{
		"iss": tok.Issuer,
		"iat": tok.IssuedAt.Unix(),
		"exp": tok.ExpiresAt.Unix(),
		"qsh": tok.QSH,
	}
	var method jwt.SigningMethod
	var key any
	switch tok.Alg {
	case "RS256":
		method, key = jwt.SigningMethodRS256, a.Key
		aud := tok.Audience
		if aud == "" {
			aud = appBaseURL
		}
		claims["aud"] = aud
	case "HS256":
		method, key = jwt.SigningMethodHS256, tok.Secret
	case "none":
		method, key = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
	default:
		t.Fatalf("unknown alg %q", tok.Alg)
	}
	if tok.SignWith != nil {
		key = tok.SignWith
	}
	j := jwt.NewWithClaims(method, claims)
	switch {
	case tok.KID == "-":
	case tok.KID != "":
		j.Header["kid"] = tok.KID
	case tok.Alg == "RS256":
		j.Header["kid"] = KID
	}
	s, err := j.SignedString(key)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

// PublicKeyPEM is the PEM of the fake's public key (for alg-confusion attacks).
func (a *Atlassian) PublicKeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&a.Key.PublicKey)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
