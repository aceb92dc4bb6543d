// Package forgetest mints Forge Invocation Tokens and serves their JWKS, for
// tests and the local simulator. It does not import testing, so the
// simulator can use it at run time. Its keys are generated per Issuer and
// never leave the process.
package forgetest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/golang-jwt/jwt/v5"
)

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// Issuer plays Forge for one app: it holds RSA signing keys, mints FITs and
// serves the JWKS. It is safe for concurrent use.
type Issuer struct {
	appID   string
	envID   string
	fetches atomic.Int64
	down    atomic.Bool

	mu   sync.Mutex
	keys []signingKey // keys[0] signs; older keys stay published
}

// NewIssuer returns an Issuer for appID (a bare UUID or an app ARI; a fresh
// random app when empty) with a fresh RSA-2048 key whose kid is
// "forge/invocation-token/<random>".
func NewIssuer(appID string) (*Issuer, error) {
	if appID == "" {
		appID = newUUID()
	}
	ari, err := forge.NormalizeAppID(appID)
	if err != nil {
		return nil, err
	}
	i := &Issuer{appID: ari}
	i.envID = forge.EnvironmentARIPrefix + i.AppUUID() + "/" + newUUID()
	if err := i.Rotate(); err != nil {
		return nil, err
	}
	return i, nil
}

// EnvironmentID returns the environment ARI of the issuer's tokens.
func (i *Issuer) EnvironmentID() string { return i.envID }

// AppID returns the issuer's app ARI.
func (i *Issuer) AppID() string { return i.appID }

// AppUUID returns the UUID suffix of AppID.
func (i *Issuer) AppUUID() string { return strings.TrimPrefix(i.appID, forge.AppARIPrefix) }

// Kid returns the kid of the current signing key.
func (i *Issuer) Kid() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[0].kid
}

// PublicKeyPEM returns the current public key as a PKIX PEM block; tests use
// it as the HMAC secret of an algorithm-confusion token.
func (i *Issuer) PublicKeyPEM() []byte {
	i.mu.Lock()
	pub := &i.keys[0].priv.PublicKey
	i.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // an RSA public key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Rotate makes a new RSA-2048 key with a new kid the signing key. The old
// keys stay in the JWKS (as Atlassian publishes the previous key during a
// rotation), so tokens already minted still verify; use DropOldKeys to
// retire them.
func (i *Issuer) Rotate() error {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("forgetest: generate key: %w", err)
	}
	k := signingKey{kid: forge.Issuer + "/" + randomHex(8), priv: priv}
	i.mu.Lock()
	i.keys = append([]signingKey{k}, i.keys...)
	i.mu.Unlock()
	return nil
}

// DropOldKeys removes every key but the current one from the JWKS.
func (i *Issuer) DropOldKeys() {
	i.mu.Lock()
	i.keys = i.keys[:1]
	i.mu.Unlock()
}

// JWKS returns the JSON Web Key Set of the issuer's public keys.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	var set forge.JWKSet
	for _, k := range i.keys {
		pub := k.priv.PublicKey
		set.Keys = append(set.Keys, forge.JWK{
			Kty: "RSA", Use: "sig", Alg: "RS256", Kid: k.kid,
			N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err) // only strings
	}
	return b
}

// Handler serves JWKS() on any path, counting requests (FetchCount); while
// SetDown(true) it answers 503 instead.
func (i *Issuer) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		i.fetches.Add(1)
		if i.down.Load() {
			http.Error(w, "jwks down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(i.JWKS())
	})
}

// FetchCount returns how many requests Handler has served (including failed
// ones while down).
func (i *Issuer) FetchCount() int64 { return i.fetches.Load() }

// SetDown makes Handler fail (503) while down is true.
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// Token describes a FIT to mint. Every empty field takes a default that makes
// a valid token for the issuer's app; the override fields exist for negative
// tests.
type Token struct {
	// InstallationID is the installation ARI; a fresh one when empty.
	InstallationID string
	// CloudID is the site's cloudId; a fresh one when empty.
	CloudID string
	// APIBaseURL defaults to https://api.atlassian.com/ex/jira/<CloudID>.
	APIBaseURL string
	// EnvironmentType defaults to PRODUCTION.
	EnvironmentType string
	// EnvironmentID defaults to the issuer's environment,
	// ari:cloud:ecosystem::environment/<appUuid>/<uuid>, the same for every
	// token of the issuer (EnvironmentID returns it).
	EnvironmentID string
	// ModuleKey defaults to "lifecycle-endpoint".
	ModuleKey string
	// AppVersion defaults to "1.0.0".
	AppVersion string
	// License, when set, becomes app.license.
	License *forge.License
	// IssuedAt (iat = nbf) defaults to time.Now().
	IssuedAt time.Time
	// TTL (exp - iat) defaults to 25 s.
	TTL time.Duration
	// Alg overrides the algorithm: "HS256" signs with the public key PEM
	// as the HMAC secret (algorithm confusion), "none" leaves the token
	// unsigned. Default RS256 with the current key.
	Alg string
	// Kid overrides the header kid (the signing key stays the current one).
	Kid string
	// OmitKid leaves the kid out of the header.
	OmitKid bool
	// Audience and Issuer override aud and iss.
	Audience, Issuer string
	// Extra is merged into the top-level claims (a nil value deletes one).
	Extra map[string]any
	// AppExtra is merged into the app claim (a nil value deletes one).
	AppExtra map[string]any
}

// Mint returns a compact FIT for t.
func (i *Issuer) Mint(t Token) (string, error) {
	if t.InstallationID == "" {
		t.InstallationID = NewInstallationID()
	}
	if t.CloudID == "" {
		t.CloudID = NewCloudID()
	}
	if t.APIBaseURL == "" {
		t.APIBaseURL = "https://api.atlassian.com/ex/jira/" + t.CloudID
	}
	if t.EnvironmentType == "" {
		t.EnvironmentType = "PRODUCTION"
	}
	if t.EnvironmentID == "" {
		t.EnvironmentID = i.envID
	}
	if t.ModuleKey == "" {
		t.ModuleKey = "lifecycle-endpoint"
	}
	if t.AppVersion == "" {
		t.AppVersion = "1.0.0"
	}
	if t.IssuedAt.IsZero() {
		t.IssuedAt = time.Now()
	}
	if t.TTL == 0 {
		t.TTL = 25 * time.Second
	}
	if t.Audience == "" {
		t.Audience = i.appID
	}
	if t.Issuer == "" {
		t.Issuer = forge.Issuer
	}
	app := map[string]any{
		"id":             i.appID,
		"installationId": t.InstallationID,
		"apiBaseUrl":     t.APIBaseURL,
		"appVersion":     t.AppVersion,
		"installation": map[string]any{
			"id": t.InstallationID,
			"contexts": []map[string]any{{
				"name":       "ari:cloud:jira::site/" + t.CloudID,
				"apiBaseUrl": t.APIBaseURL,
				"cloudId":    t.CloudID,
			}},
		},
		"environment": map[string]any{"type": t.EnvironmentType, "id": t.EnvironmentID},
		"module":      map[string]any{"type": "core:endpoint", "key": t.ModuleKey},
	}
	if t.License != nil {
		app["license"] = t.License
	}
	merge(app, t.AppExtra)
	claims := jwt.MapClaims{
		"iss": t.Issuer,
		"aud": t.Audience,
		"iat": t.IssuedAt.Unix(),
		"nbf": t.IssuedAt.Unix(),
		"exp": t.IssuedAt.Add(t.TTL).Unix(),
		"jti": newUUID(),
		"app": app,
	}
	merge(claims, t.Extra)

	i.mu.Lock()
	key := i.keys[0]
	i.mu.Unlock()
	kid := key.kid
	if t.Kid != "" {
		kid = t.Kid
	}
	var method jwt.SigningMethod = jwt.SigningMethodRS256
	var signKey any = key.priv
	switch t.Alg {
	case "", "RS256":
	case "HS256":
		method, signKey = jwt.SigningMethodHS256, i.PublicKeyPEM()
	case "none":
		method, signKey = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
	default:
		return "", fmt.Errorf("forgetest: unsupported Alg %q", t.Alg)
	}
	tok := jwt.NewWithClaims(method, claims)
	if t.OmitKid {
		delete(tok.Header, "kid")
	} else {
		tok.Header["kid"] = kid
	}
	return tok.SignedString(signKey)
}

// SignHS256 signs arbitrary claims with HMAC-SHA256 under secret, with the
// given kid; for algorithm-confusion tests outside jwt's helpers.
func SignHS256(header, payload []byte, secret []byte) string {
	s := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return s + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		dst[k] = v
	}
}

// NewInstallationID returns a fresh installation ARI.
func NewInstallationID() string { return forge.InstallationARIPrefix + newUUID() }

// NewCloudID returns a fresh cloudId (a UUID).
func NewCloudID() string { return newUUID() }

// NewUUID returns a fresh random lowercase UUID (version 4).
func NewUUID() string { return newUUID() }

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// StaticClient returns an HTTP client that answers every request from i's
// Handler in process, without a network: a Verifier configured with it can
// verify i's tokens in fuzz targets and examples.
func StaticClient(i *Issuer) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		i.Handler().ServeHTTP(rec, r)
		return rec.Result(), nil
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
