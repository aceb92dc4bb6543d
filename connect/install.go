package connect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxInstallTokenLifetime bounds exp - iat of a signed install: Atlassian's
// lifecycle tokens live 3 minutes, and a longer-lived token would stay
// replayable for longer.
const MaxInstallTokenLifetime = 5 * time.Minute

// ErrBadLifetime means a signed install's iat is in the future (beyond the
// leeway) or its exp is more than MaxInstallTokenLifetime after its iat.
var ErrBadLifetime = errors.New("connect: jwt lifetime not acceptable")

// InstallConfig configures an InstallVerifier.
type InstallConfig struct {
	// AppBaseURL is CONNECT_BASE_URL, the descriptor baseUrl: the aud of
	// signed installs. Required.
	AppBaseURL string
	// AllowedBaseURLs are CONNECT_ALLOWED_BASE_URLS: older or alternative
	// base URLs also accepted as aud (and as qsh base path).
	AllowedBaseURLs []string
	// Hosts decides which product baseUrls may install. Required.
	Hosts *HostPolicy
	// Keys provides install public keys, normally a *KeyServer. Required.
	Keys KeyProvider
	// Leeway is the clock skew tolerated on exp and nbf; DefaultLeeway (30 s)
	// when zero.
	Leeway time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// InstallVerifier verifies the RS256 signed install tokens of the installed
// and uninstalled lifecycle callbacks (docs/protocol.md#signed-installs). It is safe for
// concurrent use.
type InstallVerifier struct {
	audiences []string // each without one trailing '/'
	basePaths []string
	hosts     *HostPolicy
	keys      KeyProvider
	leeway    time.Duration
	now       func() time.Time
	parser    *jwt.Parser
}

// NewInstallVerifier validates cfg and returns a verifier.
func NewInstallVerifier(cfg InstallConfig) (*InstallVerifier, error) {
	if cfg.AppBaseURL == "" {
		return nil, errors.New("connect: InstallConfig.AppBaseURL is required")
	}
	if cfg.Hosts == nil {
		return nil, errors.New("connect: InstallConfig.Hosts is required")
	}
	if cfg.Keys == nil {
		return nil, errors.New("connect: InstallConfig.Keys is required")
	}
	all := append([]string{cfg.AppBaseURL}, cfg.AllowedBaseURLs...)
	paths, err := basePathsOf(all)
	if err != nil {
		return nil, fmt.Errorf("connect: InstallConfig base URLs: %w", err)
	}
	var auds []string
	for _, u := range all {
		if a := strings.TrimSuffix(u, "/"); !slices.Contains(auds, a) {
			auds = append(auds, a)
		}
	}
	leeway, now, err := clock(cfg.Leeway, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("connect: InstallConfig.Leeway: %w", err)
	}
	return &InstallVerifier{
		audiences: auds,
		basePaths: paths,
		hosts:     cfg.Hosts,
		keys:      cfg.Keys,
		leeway:    leeway,
		now:       now,
		parser:    newParser(jwt.SigningMethodRS256.Alg()),
	}, nil
}

// Verify authenticates an installed or uninstalled callback. clientKey and
// productBaseURL are the clientKey and baseUrl of the parsed JSON body.
//
// The checks run in the order of docs/protocol.md#signed-installs, each with its own error:
//  1. productBaseURL allowed by the HostPolicy (ErrProductHostNotAllowed),
//     clientKey present (ErrMissingClaim);
//  2. a token (ErrMissingToken) whose header alg is RS256 (ErrBadAlgorithm
//     for anything else, HS256 and none included);
//  3. a kid that passes ValidKeyID (ErrBadKeyID), before any URL is built;
//  4. the public key (ErrUnknownKey, ErrKeyUnavailable, ErrKeyFetchLimited);
//  5. the RS256 signature (ErrBadSignature);
//  6. iss present (ErrMissingClaim);
//  7. aud equal to the app base URL or an allowed one, one trailing '/'
//     ignored on each side (ErrMissingClaim, ErrBadAudience);
//  8. the computed qsh of this request; a context token is refused
//     (ErrMissingClaim, ErrQSHMismatch);
//  9. exp with leeway (ErrMissingClaim, ErrExpired); iat present
//     (ErrMissingClaim), not later than now plus leeway and at most
//     MaxInstallTokenLifetime before exp (ErrBadLifetime);
//  10. iss equal to clientKey (ErrIssuerMismatch), so a tenant's valid token
//     can never write another tenant's record.
//
// Claims are decoded strictly (see jwtClaims.UnmarshalJSON): exact member
// names, each once, NumericDates as JSON numbers within years 1970-9999; any
// other shape is ErrMalformedToken.
//
// The key is only ever used as an *rsa.PublicKey for RS256; it can never
// become an HMAC secret.
func (v *InstallVerifier) Verify(ctx context.Context, r *http.Request, clientKey, productBaseURL string) (*Claims, error) {
	if _, err := v.hosts.CheckBaseURL(productBaseURL); err != nil {
		return nil, err
	}
	if clientKey == "" {
		return nil, fmt.Errorf("%w: install payload has no clientKey", ErrMissingClaim)
	}

	raw, hdr, err := extractWithAlg(r, jwt.SigningMethodRS256.Alg(), "RS256 for a signed install")
	if err != nil {
		return nil, err
	}
	if hdr.Kid == "" {
		return nil, fmt.Errorf("%w: header has no kid", ErrBadKeyID)
	}
	if !ValidKeyID(hdr.Kid) {
		return nil, fmt.Errorf("%w: kid %q is not a safe key id", ErrBadKeyID, truncate(hdr.Kid, 64))
	}

	key, err := v.keys.PublicKey(ctx, hdr.Kid, productBaseURL)
	switch {
	case err != nil && (errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrKeyUnavailable) ||
		errors.Is(err, ErrKeyFetchLimited) || errors.Is(err, ErrBadKeyID)):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrKeyUnavailable, err)
	case key == nil:
		return nil, fmt.Errorf("%w: key provider returned no key for kid %q", ErrKeyUnavailable, hdr.Kid)
	}

	var claims jwtClaims
	_, err = v.parser.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return key, nil })
	if err != nil {
		return nil, mapJWTError(err)
	}

	if claims.Issuer == "" {
		return nil, fmt.Errorf("%w: iss", ErrMissingClaim)
	}
	if err := v.checkAudience(claims.Audience); err != nil {
		return nil, err
	}
	if err := qshMatches(claims.QSH, r, v.basePaths, false); err != nil {
		return nil, err
	}
	if err := checkTimes(&claims, v.now(), v.leeway); err != nil {
		return nil, err
	}
	if err := checkInstallLifetime(&claims, v.now(), v.leeway); err != nil {
		return nil, err
	}
	if claims.Issuer != clientKey {
		return nil, fmt.Errorf("%w: iss %q, body clientKey %q", ErrIssuerMismatch, truncate(claims.Issuer, 128), truncate(clientKey, 128))
	}
	return toClaims(&claims, hdr.Kid), nil
}

// checkAudience accepts the token if any aud value is one of the app's base
// URLs (RFC 7519 §4.1.3; Atlassian sends exactly one).
func (v *InstallVerifier) checkAudience(aud []string) error {
	if len(aud) == 0 {
		return fmt.Errorf("%w: aud", ErrMissingClaim)
	}
	for _, a := range aud {
		if slices.Contains(v.audiences, strings.TrimSuffix(a, "/")) {
			return nil
		}
	}
	return fmt.Errorf("%w: aud %q, want one of %q", ErrBadAudience, truncate(strings.Join(aud, ","), 256), v.audiences)
}

// checkInstallLifetime requires iat and bounds the token's lifetime, so that a
// captured install token can be replayed only briefly (the receiver remembers
// the tokens it saw until exp plus leeway).
func checkInstallLifetime(c *jwtClaims, now time.Time, leeway time.Duration) error {
	if c.IssuedAt == nil {
		return fmt.Errorf("%w: iat", ErrMissingClaim)
	}
	iat, exp := c.IssuedAt.Time, c.ExpiresAt.Time
	if now.Add(leeway).Before(iat) {
		return fmt.Errorf("%w: iat %s is after now %s plus leeway %s",
			ErrBadLifetime, iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
	}
	if life := exp.Sub(iat); life > MaxInstallTokenLifetime {
		return fmt.Errorf("%w: exp - iat is %s, more than %s", ErrBadLifetime, life, MaxInstallTokenLifetime)
	}
	return nil
}
