package forge

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenLength bounds a FIT (and the Authorization header carrying it);
// longer ones are refused with ErrMalformed before any parsing.
const MaxTokenLength = 32 << 10

// Defaults of Config.
const (
	DefaultLeeway     = 5 * time.Second
	DefaultKeyTTL     = time.Hour
	DefaultMinRefresh = 30 * time.Second
	// DefaultJWKSTimeout bounds one JWKS fetch.
	DefaultJWKSTimeout = 2 * time.Second
	// DefaultEnvironment is the only app.environment.type accepted by
	// default.
	DefaultEnvironment = "PRODUCTION"
	// DefaultAPIHost is the only app.apiBaseUrl host accepted by default.
	DefaultAPIHost = "api.atlassian.com"
)

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9._/:-]{1,200}$`)

func validKid(kid string) bool { return kidPattern.MatchString(kid) }

// Config configures a Verifier. Zero values take the documented defaults.
type Config struct {
	// AppID is the app this receiver serves: a bare UUID or the app ARI
	// (normalised to the ARI, which is what aud and app.id carry). Required.
	AppID string
	// JWKSURL is where the FIT keys are fetched; DefaultJWKSURL when empty.
	// It must be https unless AllowInsecureJWKS.
	JWKSURL string
	// AllowInsecureJWKS allows an http JWKS URL and http loopback
	// apiBaseUrl hosts: for tests and the simulator only.
	AllowInsecureJWKS bool
	// Environments are the accepted app.environment.type values;
	// ["PRODUCTION"] when empty.
	Environments []string
	// APIHosts are the accepted hosts of app.apiBaseUrl, matched exactly
	// (lowercase, no port, no trailing dot); ["api.atlassian.com"] when
	// empty. The URL must be https without userinfo or port, except that a
	// loopback host (127.0.0.1, ::1, localhost) listed here may use http and
	// any port when AllowInsecureJWKS is set, for the simulator.
	APIHosts []string
	// HTTPClient fetches the JWKS; a client with a 2 s timeout when nil.
	HTTPClient *http.Client
	// Leeway is the clock skew tolerated on exp, nbf and iat; 5 s when zero.
	Leeway time.Duration
	// KeyTTL is how long a fetched JWKS is used before it is refreshed on
	// demand; 1 h when zero.
	KeyTTL time.Duration
	// MinRefresh is the least time between two JWKS fetches triggered by an
	// unknown kid or an expired TTL; 30 s when zero.
	MinRefresh time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives JWKS refresh warnings; slog.Default() when nil.
	Logger *slog.Logger
}

// Verifier authenticates Forge Invocation Tokens for one app. It is safe for
// concurrent use and starts no goroutine, so it needs no Close.
type Verifier struct {
	appID    string
	appUUID  string
	envs     []string
	hosts    []string
	insecure bool
	leeway   time.Duration
	now      func() time.Time
	keys     *keySet
}

// NewVerifier returns a Verifier for cfg, or an error wrapping ErrConfig
// naming the invalid field. It does not fetch the JWKS; call Warm for that.
func NewVerifier(cfg Config) (*Verifier, error) {
	appID, err := NormalizeAppID(cfg.AppID)
	if err != nil {
		return nil, fmt.Errorf("AppID: %w", err)
	}
	v := &Verifier{
		appID:    appID,
		appUUID:  strings.TrimPrefix(appID, AppARIPrefix),
		envs:     cfg.Environments,
		insecure: cfg.AllowInsecureJWKS,
		leeway:   cfg.Leeway,
		now:      cfg.Now,
	}
	if len(v.envs) == 0 {
		v.envs = []string{DefaultEnvironment}
	}
	for _, e := range v.envs {
		if e == "" {
			return nil, fmt.Errorf("%w: Environments has an empty value", ErrConfig)
		}
	}
	hosts := cfg.APIHosts
	if len(hosts) == 0 {
		hosts = []string{DefaultAPIHost}
	}
	for _, h := range hosts {
		if h == "" || h != strings.ToLower(h) || strings.ContainsAny(h, ":/@ ") && !strings.HasPrefix(h, "[") || strings.HasSuffix(h, ".") {
			return nil, fmt.Errorf("%w: APIHosts value %q is not a lowercase host name without port or trailing dot", ErrConfig, h)
		}
		v.hosts = append(v.hosts, strings.Trim(h, "[]"))
	}
	if v.leeway <= 0 {
		v.leeway = DefaultLeeway
	}
	if v.now == nil {
		v.now = time.Now
	}
	jwksURL := cfg.JWKSURL
	if jwksURL == "" {
		jwksURL = DefaultJWKSURL
	}
	u, err := url.Parse(jwksURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && cfg.AllowInsecureJWKS)) {
		return nil, fmt.Errorf("%w: JWKSURL %q must be an absolute https URL (http needs AllowInsecureJWKS)", ErrConfig, jwksURL)
	}
	ks := &keySet{
		url:        jwksURL,
		client:     cfg.HTTPClient,
		timeout:    DefaultJWKSTimeout,
		ttl:        cfg.KeyTTL,
		minRefresh: cfg.MinRefresh,
		now:        v.now,
		log:        cfg.Logger,
	}
	if ks.client == nil {
		ks.client = &http.Client{Timeout: DefaultJWKSTimeout}
	}
	if ks.ttl <= 0 {
		ks.ttl = DefaultKeyTTL
	}
	if ks.minRefresh <= 0 {
		ks.minRefresh = DefaultMinRefresh
	}
	if ks.log == nil {
		ks.log = slog.Default()
	}
	v.keys = ks
	return v, nil
}

// AppID returns the app ARI the Verifier accepts as aud and app.id.
func (v *Verifier) AppID() string { return v.appID }

// Warm fetches the JWKS now, for start-up and readiness checks; the error
// wraps ErrKeysUnavailable when it cannot.
func (v *Verifier) Warm(ctx context.Context) error {
	return v.keys.refresh(ctx)
}

// Verify authenticates r's "Authorization: Bearer <FIT>" header and returns
// the verified claims. moduleKeys, when non-empty, bind the route:
// app.module.key must be one of them. Errors wrap one of the package's
// sentinel errors (see HTTPStatus).
func (v *Verifier) Verify(ctx context.Context, r *http.Request, moduleKeys ...string) (*Claims, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return nil, fmt.Errorf("%w: no Authorization header", ErrNoToken)
	}
	if len(values) > 1 {
		return nil, fmt.Errorf("%w: %d Authorization headers", ErrMalformed, len(values))
	}
	h := values[0]
	if len(h) > MaxTokenLength+len("Bearer ") {
		return nil, fmt.Errorf("%w: Authorization header of %d bytes exceeds %d", ErrMalformed, len(h), MaxTokenLength)
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, fmt.Errorf("%w: Authorization scheme is not Bearer", ErrNoToken)
	}
	return v.VerifyToken(ctx, strings.TrimSpace(token), moduleKeys...)
}

// wireClaims is the decoded FIT payload.
type wireClaims struct {
	Iss     *string         `json:"iss"`
	Aud     json.RawMessage `json:"aud"`
	Iat     *float64        `json:"iat"`
	Nbf     *float64        `json:"nbf"`
	Exp     *float64        `json:"exp"`
	Jti     string          `json:"jti"`
	App     *App            `json:"app"`
	Context json.RawMessage `json:"context"`
	ICLabel json.RawMessage `json:"icLabel"`
}

// VerifyToken verifies a compact FIT (without the "Bearer " prefix); see
// Verify.
func (v *Verifier) VerifyToken(ctx context.Context, token string, moduleKeys ...string) (*Claims, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty bearer token", ErrNoToken)
	}
	if len(token) > MaxTokenLength {
		return nil, fmt.Errorf("%w: token of %d bytes exceeds %d", ErrMalformed, len(token), MaxTokenLength)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: %d segments, want 3 (or several tokens)", ErrMalformed, len(parts))
	}
	headerJSON, err := b64(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	payloadJSON, err := b64(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	var header struct {
		Alg  *string         `json:"alg"`
		Kid  *string         `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(headerJSON, &header); err != nil {
		return nil, fmt.Errorf("%w: header is not a JSON object: %w", ErrMalformed, err)
	}
	if header.Alg == nil || *header.Alg != "RS256" {
		alg := "<missing>"
		if header.Alg != nil {
			alg = *header.Alg
		}
		return nil, fmt.Errorf("%w: alg %.40q, want RS256", ErrAlgorithm, alg)
	}
	if header.Crit != nil {
		return nil, fmt.Errorf("%w: crit header is not supported", ErrMalformed)
	}
	if header.Kid == nil || !validKid(*header.Kid) {
		return nil, fmt.Errorf("%w: kid is missing or not of the form %s", ErrMalformed, kidPattern)
	}
	// The signature is decoded after the header checks, so an unsigned
	// (alg none) token is reported as the algorithm breach it is.
	sig, err := b64(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	var wc wireClaims
	if err := decodeObject(payloadJSON, &wc); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	key, err := v.keys.key(ctx, *header.Kid)
	if err != nil {
		return nil, err
	}
	if err := verifyRS256(parts[0]+"."+parts[1], sig, key); err != nil {
		return nil, fmt.Errorf("%w: kid %q", ErrSignature, *header.Kid)
	}
	return v.checkClaims(&wc, moduleKeys)
}

func verifyRS256(signingString string, sig []byte, key *rsa.PublicKey) error {
	return jwt.SigningMethodRS256.Verify(signingString, sig, key)
}

// b64 decodes one unpadded base64url segment strictly.
func b64(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("empty segment")
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

// decodeObject decodes a single JSON object into dst.
func decodeObject(data []byte, dst any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

func numericTime(name string, f *float64) (time.Time, error) {
	if f == nil {
		return time.Time{}, fmt.Errorf("%w: %s is missing", ErrClaims, name)
	}
	if math.IsNaN(*f) || math.IsInf(*f, 0) || *f < 0 || *f > 1e11 {
		return time.Time{}, fmt.Errorf("%w: %s %v is not a plausible NumericDate", ErrClaims, name, *f)
	}
	sec, frac := math.Modf(*f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

func (v *Verifier) checkClaims(wc *wireClaims, moduleKeys []string) (*Claims, error) {
	if wc.Iss == nil || *wc.Iss != Issuer {
		return nil, fmt.Errorf("%w: iss is not %q", ErrClaims, Issuer)
	}
	if err := v.checkAudience(wc.Aud); err != nil {
		return nil, err
	}
	iat, err := numericTime("iat", wc.Iat)
	if err != nil {
		return nil, err
	}
	nbf, err := numericTime("nbf", wc.Nbf)
	if err != nil {
		return nil, err
	}
	exp, err := numericTime("exp", wc.Exp)
	if err != nil {
		return nil, err
	}
	now := v.now()
	if !now.Before(exp.Add(v.leeway)) {
		return nil, fmt.Errorf("%w: exp %s is past (now %s, leeway %s)", ErrClaims, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	if nbf.After(now.Add(v.leeway)) {
		return nil, fmt.Errorf("%w: nbf %s is in the future (now %s, leeway %s)", ErrClaims, nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	if iat.After(now.Add(v.leeway)) {
		return nil, fmt.Errorf("%w: iat %s is in the future (now %s, leeway %s)", ErrClaims, iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	if wc.Jti == "" {
		return nil, fmt.Errorf("%w: jti is missing", ErrClaims)
	}
	if wc.ICLabel != nil {
		return nil, fmt.Errorf("%w: icLabel present: Isolated Cloud invocations are not supported", ErrClaims)
	}
	if wc.App == nil {
		return nil, fmt.Errorf("%w: app is missing", ErrClaims)
	}
	app := wc.App
	if app.ID != v.appID {
		return nil, fmt.Errorf("%w: app.id %q is not aud %q", ErrClaims, app.ID, v.appID)
	}
	if !IsInstallationID(app.InstallationID) {
		return nil, fmt.Errorf("%w: app.installationId %q is not %s<uuid>", ErrClaims, app.InstallationID, InstallationARIPrefix)
	}
	if app.Installation.ID != "" && app.Installation.ID != app.InstallationID {
		return nil, fmt.Errorf("%w: app.installation.id %q differs from app.installationId %q", ErrClaims, app.Installation.ID, app.InstallationID)
	}
	if !slices.Contains(v.envs, app.Environment.Type) {
		return nil, fmt.Errorf("%w: app.environment.type %q is not one of %q", ErrClaims, app.Environment.Type, v.envs)
	}
	if id := app.Environment.ID; id != "" {
		rest, ok := strings.CutPrefix(id, EnvironmentARIPrefix+v.appUUID+"/")
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return nil, fmt.Errorf("%w: app.environment.id %q is not %s%s/<envId>", ErrClaims, id, EnvironmentARIPrefix, v.appUUID)
		}
	}
	if err := v.checkAPIBaseURL(app.APIBaseURL); err != nil {
		return nil, err
	}
	if len(moduleKeys) > 0 && !slices.Contains(moduleKeys, app.Module.Key) {
		return nil, fmt.Errorf("%w: app.module.key %q is not bound to this route (want one of %q)", ErrClaims, app.Module.Key, moduleKeys)
	}
	c := &Claims{
		ID:        wc.Jti,
		IssuedAt:  iat,
		NotBefore: nbf,
		ExpiresAt: exp,
		App:       *app,
	}
	if len(wc.Context) > 0 && string(wc.Context) != "null" {
		c.Context = append(json.RawMessage(nil), wc.Context...)
	}
	return c, nil
}

// checkAudience accepts aud as the app ARI, or an array containing it.
func (v *Verifier) checkAudience(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return fmt.Errorf("%w: aud is missing", ErrClaims)
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one != v.appID {
			return fmt.Errorf("%w: aud %q is not this app (%s)", ErrClaims, one, v.appID)
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrClaims)
	}
	if !slices.Contains(many, v.appID) {
		return fmt.Errorf("%w: aud %q does not name this app (%s)", ErrClaims, many, v.appID)
	}
	return nil
}

// checkAPIBaseURL enforces Config.APIHosts on app.apiBaseUrl.
func (v *Verifier) checkAPIBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || raw == "" || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: app.apiBaseUrl %q is not an absolute URL", ErrClaims, raw)
	}
	if u.User != nil {
		return fmt.Errorf("%w: app.apiBaseUrl %q has userinfo", ErrClaims, raw)
	}
	host := u.Hostname()
	if !slices.Contains(v.hosts, host) {
		return fmt.Errorf("%w: app.apiBaseUrl host %q is not allowed", ErrClaims, host)
	}
	if v.insecure && isLoopback(host) {
		if u.Scheme != "https" && u.Scheme != "http" {
			return fmt.Errorf("%w: app.apiBaseUrl %q is not http(s)", ErrClaims, raw)
		}
		return nil
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%w: app.apiBaseUrl %q is not https", ErrClaims, raw)
	}
	if u.Port() != "" {
		return fmt.Errorf("%w: app.apiBaseUrl %q names a port", ErrClaims, raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
