package forge

import (
	"errors"
	"net/http"
)

// The sentinel errors below are what callers branch on. Every error returned
// by the Verifier wraps exactly one of them, with detail naming the failed
// check for logs. The detail never contains the token or key material, so
// errors can be logged as they are; the HTTP layer shows none of it.
var (
	// ErrNoToken means the request has no Authorization header or one
	// whose scheme is not Bearer.
	ErrNoToken = errors.New("forge: missing bearer invocation token")

	// ErrMalformed means the token is not a compact JWS (three base64url
	// segments of JSON), is longer than MaxTokenLength, is one of several
	// tokens in the request, or has a missing or unsafe kid. It is refused
	// before any key is looked up.
	ErrMalformed = errors.New("forge: malformed invocation token")

	// ErrAlgorithm means the token header names another algorithm than
	// RS256, including "none" and HS256. The header's alg is never used to
	// choose a key.
	ErrAlgorithm = errors.New("forge: unexpected invocation token algorithm")

	// ErrUnknownKey means the kid is not in Atlassian's JWKS, even after at
	// most one refresh of the key set.
	ErrUnknownKey = errors.New("forge: unknown invocation token key")

	// ErrSignature means the RS256 signature does not verify with the key of
	// the token's kid.
	ErrSignature = errors.New("forge: invalid invocation token signature")

	// ErrClaims means a claim is missing or refused: iss, aud, the time
	// claims, jti, app.id, the installation ids, the environment, the
	// apiBaseUrl host, the module key or an Isolated Cloud icLabel.
	ErrClaims = errors.New("forge: invocation token claims refused")

	// ErrKeysUnavailable means no key set is usable: the JWKS has never been
	// fetched successfully. It is transient; the receiver answers 503 so that
	// Forge retries.
	ErrKeysUnavailable = errors.New("forge: invocation token keys unavailable")

	// ErrConfig means a Config value is invalid; NewVerifier returns it.
	ErrConfig = errors.New("forge: invalid verifier config")

	// ErrBody means a delivery body is not a JSON object, is invalid JSON or
	// is larger than MaxBodySize.
	ErrBody = errors.New("forge: invalid event body")
)

// HTTPStatus maps a Verifier error to the status Forge should see: 503 for
// ErrKeysUnavailable (our outage, Forge retries), 200 for nil, and 401 for
// every other error, so that a bad token never looks like our outage.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrKeysUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}
