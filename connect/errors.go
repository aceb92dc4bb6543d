package connect

import (
	"errors"
	"net/http"
)

// The sentinel errors below are what callers branch on. Every error returned
// by a verifier wraps exactly the sentinel that names the first check that
// failed, with detail for logs. The detail never contains a token, a shared
// secret or key material, so errors can be logged as they are.
var (
	// ErrMissingToken means the request carries no Connect JWT: neither an
	// "Authorization: JWT <token>" header nor a jwt query parameter.
	ErrMissingToken = errors.New("connect: missing jwt")

	// ErrMalformedToken means the token is not a well-formed compact JWS
	// (segments, base64url, JSON, claim types) or is longer than
	// MaxTokenLength; such a token is refused before any key is looked up.
	ErrMalformedToken = errors.New("connect: malformed jwt")

	// ErrBadAlgorithm means the token header names another algorithm than the
	// one the endpoint requires (RS256 for signed installs, HS256 elsewhere),
	// including "none". The header's alg is never trusted to choose a key.
	ErrBadAlgorithm = errors.New("connect: unexpected jwt algorithm")

	// ErrMissingClaim means a claim the protocol requires (iss, aud, exp,
	// qsh) is absent or empty, or the install payload lacks its clientKey.
	ErrMissingClaim = errors.New("connect: missing jwt claim")

	// ErrBadSignature means the signature does not verify with the tenant's
	// shared secret (HS256) or with the install public key (RS256).
	ErrBadSignature = errors.New("connect: invalid jwt signature")

	// ErrExpired means the token's exp (plus the configured leeway) is in the
	// past, or its nbf is still in the future.
	ErrExpired = errors.New("connect: jwt expired")

	// ErrQSHMismatch means the qsh claim does not bind the token to this
	// request (method, path, query). A context token (qsh "context-qsh") on an
	// endpoint that requires a computed qsh is refused with this error too,
	// so that browser tokens can never drive lifecycle or webhook endpoints.
	ErrQSHMismatch = errors.New("connect: jwt qsh does not match the request")

	// ErrUnknownIssuer means the iss of an HS256 token names no known tenant
	// (SecretStore reported it), so no secret exists to verify it with.
	ErrUnknownIssuer = errors.New("connect: unknown jwt issuer")

	// ErrBadAudience means the aud of a signed install is none of the app's
	// base URLs: the token was minted for another app.
	ErrBadAudience = errors.New("connect: jwt audience is not this app")

	// ErrIssuerMismatch means the iss of a signed install differs from the
	// clientKey in its body: a valid token of one tenant must never write the
	// record of another.
	ErrIssuerMismatch = errors.New("connect: jwt issuer does not match the install clientKey")

	// ErrBadKeyID means the kid of a signed install is missing or is not a
	// safe key id; it is refused before any key server URL is built from it.
	ErrBadKeyID = errors.New("connect: invalid jwt key id")

	// ErrUnknownKey means the key server answered that it has no key for the
	// kid (404 or another definitive non-200 answer). The caller answers 401.
	ErrUnknownKey = errors.New("connect: unknown install key")

	// ErrKeyUnavailable means the key server could not be asked: network
	// error, timeout, 5xx, 429 or an unusable body. It is transient, never
	// cached, and the caller answers 503 so that Atlassian retries.
	ErrKeyUnavailable = errors.New("connect: install key server unavailable")

	// ErrKeyFetchLimited means the install key is in no cache and the key
	// server fetch budget (KeyServerConfig.FetchRate and FetchBurst) is spent,
	// so no fetch was made: a flood of installs with fresh kids must not
	// become a flood of key server requests. It is transient, never cached,
	// and the caller answers 503 so that Atlassian retries.
	ErrKeyFetchLimited = errors.New("connect: install key fetch budget exceeded")

	// ErrSecretUnavailable means the SecretStore failed for another reason
	// than an unknown tenant (database down, timeout). It is transient and the
	// caller answers 503 so that Atlassian retries. (Added to the API brief:
	// without it a store outage would look like a bad token.)
	ErrSecretUnavailable = errors.New("connect: shared secret store unavailable")

	// ErrProductHostNotAllowed means a product baseUrl is not an absolute
	// https URL on one of the allowed product hosts (CONNECT_PRODUCT_HOSTS).
	// Install keys are never fetched and requests are never signed for it.
	ErrProductHostNotAllowed = errors.New("connect: product host not allowed")
)

// StatusCode maps an error returned by a verifier to the HTTP status Atlassian
// should see: 503 for transient failures (key server or secret store down,
// request context ended), so that Atlassian retries, 400 for a product
// baseUrl the host policy refuses (the body is at fault, not the token), and
// 401 for everything else, so that a bad token never looks like our outage. A
// nil error maps to 200. Handlers may use it instead of repeating the mapping.
func StatusCode(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrKeyUnavailable), errors.Is(err, ErrKeyFetchLimited), errors.Is(err, ErrSecretUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrProductHostNotAllowed):
		return http.StatusBadRequest
	default:
		return http.StatusUnauthorized
	}
}
