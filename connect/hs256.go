package connect

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SecretStore gives the HS256 verifier the shared secret of a tenant. It is
// implemented by the tenant store; the verifier never keeps secrets itself.
type SecretStore interface {
	// SharedSecret returns the current shared secret of the tenant clientKey;
	// refresh=true bypasses any cache.
	// Returns an error wrapping ErrUnknownIssuer when the tenant does not exist;
	// other errors = store unavailable.
	SharedSecret(ctx context.Context, clientKey string, refresh bool) ([]byte, error)
}

// QSHPolicy says which qsh claims an endpoint accepts.
type QSHPolicy int

const (
	// QSHComputed requires the qsh to be the hash of this very request. It is
	// the policy of every product-to-app call: lifecycle callbacks, webhooks
	// and migration events (a context token there is a known attack,
	// GHSA-2x7v-w2mv-f3rx).
	QSHComputed QSHPolicy = iota
	// QSHComputedOrContext also accepts the literal ContextQSH of context
	// tokens. Use it only on endpoints the app's own iframe calls.
	QSHComputedOrContext
)

// String names the policy for logs.
func (p QSHPolicy) String() string {
	switch p {
	case QSHComputed:
		return "computed"
	case QSHComputedOrContext:
		return "computed-or-context"
	default:
		return fmt.Sprintf("QSHPolicy(%d)", int(p))
	}
}

// HS256Config configures an HS256Verifier.
type HS256Config struct {
	// AppBaseURLs are the app's base URLs: CONNECT_BASE_URL first, then
	// CONNECT_ALLOWED_BASE_URLS. A qsh is accepted if it matches the canonical
	// request relative to the path of any of them, so tenants still on an
	// older descriptor keep working. At least one is required.
	AppBaseURLs []string
	// Secrets looks up tenant shared secrets. Required.
	Secrets SecretStore
	// Leeway is the clock skew tolerated on exp and nbf; DefaultLeeway (30 s)
	// when zero.
	Leeway time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// HS256Verifier verifies the shared-secret JWTs that products send to the app
// (enabled, disabled, webhooks, migration events, iframe loads). It is safe
// for concurrent use.
type HS256Verifier struct {
	basePaths []string
	secrets   SecretStore
	leeway    time.Duration
	now       func() time.Time
	parser    *jwt.Parser
}

// NewHS256Verifier validates cfg and returns a verifier.
func NewHS256Verifier(cfg HS256Config) (*HS256Verifier, error) {
	if cfg.Secrets == nil {
		return nil, errors.New("connect: HS256Config.Secrets is required")
	}
	paths, err := basePathsOf(cfg.AppBaseURLs)
	if err != nil {
		return nil, fmt.Errorf("connect: HS256Config.AppBaseURLs: %w", err)
	}
	leeway, now, err := clock(cfg.Leeway, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("connect: HS256Config.Leeway: %w", err)
	}
	return &HS256Verifier{
		basePaths: paths,
		secrets:   cfg.Secrets,
		leeway:    leeway,
		now:       now,
		parser:    newParser(jwt.SigningMethodHS256.Alg()),
	}, nil
}

// Verify authenticates a product-to-app request and returns its claims.
//
// The token's header must say HS256 (anything else is ErrBadAlgorithm before
// a secret is looked up); iss must name a tenant, whose secret verifies the
// HMAC in constant time. If it does not, the secret is asked for again with
// refresh=true and the token re-verified once if the secret differs: another
// replica may have just stored a rotated secret from a new installed
// callback. exp (with leeway) and iat are required and the qsh must match per
// policy. Claims are decoded strictly, before any secret is looked up: exact
// member names, each once, NumericDates as JSON numbers within years
// 1970-9999 (ErrMalformedToken otherwise).
//
// Each failed signature costs one uncached SecretStore lookup; a store that
// is expensive to refresh should rate-limit refreshes per clientKey.
func (v *HS256Verifier) Verify(ctx context.Context, r *http.Request, policy QSHPolicy) (*Claims, error) {
	raw, hdr, err := extractWithAlg(r, jwt.SigningMethodHS256.Alg(), "HS256")
	if err != nil {
		return nil, err
	}

	var claims jwtClaims
	if err := v.verifySignature(ctx, raw, hdr, &claims); err != nil {
		return nil, err
	}

	if err := checkTimes(&claims, v.now(), v.leeway); err != nil {
		return nil, err
	}
	if err := qshMatches(claims.QSH, r, v.basePaths, policy == QSHComputedOrContext); err != nil {
		return nil, err
	}
	return toClaims(&claims, ""), nil
}

// verifySignature decodes the claims of raw into claims, looks up the secret
// of their issuer and verifies the HMAC, retrying once with a refreshed
// secret (retryRotated). The token is decoded once: its header was decoded
// by extractWithAlg and, when that decoding is all golang-jwt would also
// accept (hdr.stringsOnly), the payload and signature are decoded here and
// the HMAC computed as golang-jwt's HS256 does; any other token, and any
// token whose payload or signature does not decode, goes through golang-jwt,
// so that the errors and their order are the library's.
func (v *HS256Verifier) verifySignature(ctx context.Context, raw string, hdr tokenHeader, claims *jwtClaims) error {
	if !hdr.stringsOnly {
		return v.parseWithLibrary(ctx, raw, claims)
	}
	headerSeg, rest, _ := strings.Cut(raw, ".")
	payloadSeg, sigSeg, _ := strings.Cut(rest, ".")
	payload, err := base64.RawURLEncoding.DecodeString(payloadSeg)
	if err != nil {
		return v.parseWithLibrary(ctx, raw, claims)
	}
	// The same call golang-jwt makes, so the claims decode identically.
	var c jwt.Claims = claims
	if err := json.Unmarshal(payload, &c); err != nil {
		*claims = jwtClaims{}
		return v.parseWithLibrary(ctx, raw, claims)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigSeg)
	if err != nil {
		*claims = jwtClaims{}
		return v.parseWithLibrary(ctx, raw, claims)
	}
	secret, err := v.secret(ctx, claims.Issuer, false)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(raw[:len(headerSeg)+1+len(payloadSeg)]))
	if hmac.Equal(sig, mac.Sum(nil)) {
		return nil
	}
	return v.retryRotated(ctx, raw, claims, secret)
}

// parseWithLibrary verifies raw with golang-jwt, decoding its claims into
// claims, as verifySignature does.
func (v *HS256Verifier) parseWithLibrary(ctx context.Context, raw string, claims *jwtClaims) error {
	var (
		secret    []byte
		lookupErr error
	)
	_, err := v.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) {
		secret, lookupErr = v.secret(ctx, claims.Issuer, false)
		if lookupErr != nil {
			return nil, lookupErr
		}
		return secret, nil
	})
	if lookupErr != nil {
		return lookupErr
	}
	if err != nil {
		if !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return mapJWTError(err)
		}
		return v.retryRotated(ctx, raw, claims, secret)
	}
	return nil
}

// retryRotated re-verifies raw with a freshly read secret when it differs from
// the one that failed.
func (v *HS256Verifier) retryRotated(ctx context.Context, raw string, claims *jwtClaims, stale []byte) error {
	iss := claims.Issuer
	fresh, err := v.secret(ctx, iss, true)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(fresh, stale) == 1 {
		return fmt.Errorf("%w: HMAC does not verify with the shared secret of %q", ErrBadSignature, iss)
	}
	*claims = jwtClaims{}
	_, err = v.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return fresh, nil })
	if err != nil {
		if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return fmt.Errorf("%w: HMAC does not verify with the shared secret of %q, nor with its refreshed value", ErrBadSignature, iss)
		}
		return mapJWTError(err)
	}
	return nil
}

// secret asks the store for the secret of iss and types its errors.
func (v *HS256Verifier) secret(ctx context.Context, iss string, refresh bool) ([]byte, error) {
	if iss == "" {
		return nil, fmt.Errorf("%w: iss", ErrMissingClaim)
	}
	secret, err := v.secrets.SharedSecret(ctx, iss, refresh)
	switch {
	case errors.Is(err, ErrUnknownIssuer):
		return nil, fmt.Errorf("%w: no tenant %q", ErrUnknownIssuer, truncate(iss, 128))
	case err != nil:
		return nil, fmt.Errorf("%w: shared secret of %q: %w", ErrSecretUnavailable, truncate(iss, 128), err)
	case len(secret) == 0:
		// An empty HMAC key would let anyone sign: never verify with it.
		return nil, fmt.Errorf("%w: tenant %q has no shared secret", ErrUnknownIssuer, truncate(iss, 128))
	}
	return secret, nil
}

// basePathsOf parses base URLs and returns their distinct raw paths.
func basePathsOf(raw []string) ([]string, error) {
	if len(raw) == 0 {
		return nil, errors.New("at least one base URL is required")
	}
	var paths []string
	for _, s := range raw {
		u, err := parseBaseURL(s)
		if err != nil {
			return nil, err
		}
		if p := basePathOf(u); !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// parseBaseURL parses an app base URL, which must be absolute.
func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("base URL %q: %w", s, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("base URL %q is not absolute", s)
	}
	return u, nil
}

// clock applies the defaults of a verifier's Leeway (DefaultLeeway) and Now
// (time.Now); a negative leeway is an error.
func clock(leeway time.Duration, now func() time.Time) (time.Duration, func() time.Time, error) {
	if now == nil {
		now = time.Now
	}
	switch {
	case leeway < 0:
		return 0, nil, fmt.Errorf("negative leeway %s", leeway)
	case leeway == 0:
		leeway = DefaultLeeway
	}
	return leeway, now, nil
}
