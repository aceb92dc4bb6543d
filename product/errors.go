package product

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinels the task layer branches on with errors.Is. A *StatusError maps its
// HTTP status onto them, so callers never compare status codes or strings.
var (
	// ErrUnauthorized means the product rejected our JWT (401): the stored
	// shared secret is wrong or stale, or the clock is off. Retrying with the
	// same secret cannot help; a new secret only arrives with a verified
	// installed callback.
	ErrUnauthorized = errors.New("product: unauthorized")
	// ErrForbidden (403) means the app may not do this on this site, or, for
	// the migration API, that the transfer is already settled.
	ErrForbidden = errors.New("product: forbidden")
	// ErrNotFound (404) is final for the resource asked for.
	ErrNotFound = errors.New("product: not found")
	// ErrBadRequest (400 or 422) means the product refused the request as
	// malformed; repeating it unchanged would fail again.
	ErrBadRequest = errors.New("product: bad request")
	// ErrRateLimited means the product still answered 429 after every
	// attempt; RetryAfter reports the delay it asked for, if any.
	ErrRateLimited = errors.New("product: rate limited")
	// ErrServer means the product still answered 5xx after every attempt.
	ErrServer = errors.New("product: server error")
	// ErrUnavailable wraps network failures (connection refused, reset, the
	// per-attempt timeout) that persisted through every attempt. It is
	// transient: the task should be retried later.
	ErrUnavailable = errors.New("product: unavailable")
	// ErrHostNotAllowed means the tenant's stored baseUrl did not pass the
	// host policy (CONNECT_PRODUCT_HOSTS, https only except loopback); no
	// request was sent. It also wraps connect.ErrProductHostNotAllowed.
	ErrHostNotAllowed = errors.New("product: host not allowed")
	// ErrRedirectNotFollowed means the product answered a redirect that the
	// client refuses to follow with the app's JWT: to another origin (scheme,
	// host or port), or one that would change a non-GET request. A site rename
	// looks like this until the next installed callback stores the new baseUrl.
	ErrRedirectNotFollowed = errors.New("product: redirect not followed")
	// ErrResponseTooLarge means a response body exceeded the decoding limit
	// (MaxResponseBytes); the response was not decoded.
	ErrResponseTooLarge = errors.New("product: response too large")
	// ErrNoSecret means the TargetSource returned a tenant without a shared
	// secret; signing with an empty HMAC key would be meaningless.
	ErrNoSecret = errors.New("product: tenant has no shared secret")
)

// StatusError is a non-2xx answer from the product. It carries what an
// operator needs to understand the failure without the request's secrets:
// the route template rather than the concrete path, and a body truncated to
// 1 KiB from which our own token has been scrubbed.
type StatusError struct {
	Method     string
	Route      string
	StatusCode int
	// Body is the start of the response body (at most 1 KiB, valid UTF-8).
	Body string
	// RetryAfter is the delay the product asked for with Retry-After, zero
	// when the header was absent or unparseable.
	RetryAfter time.Duration
}

// Error describes the failed call by route, never by concrete URL or token.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("product: %s %s: %d %s", e.Method, e.Route, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + strconv.Quote(e.Body)
	}
	return msg
}

// Is maps the status code onto the package sentinels, so that
// errors.Is(err, ErrUnauthorized) works through any wrapping.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest || e.StatusCode == http.StatusUnprocessableEntity
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrServer:
		return e.StatusCode >= 500 && e.StatusCode <= 599
	}
	return false
}

// RetryLaterError is returned instead of sleeping when the product asks for a
// Retry-After longer than Config.MaxRetryAfter: an asynq worker should not
// hold a slot for minutes, so the task layer hands After to asynq's
// RetryDelayFunc and frees the worker. It unwraps to the *StatusError, so
// errors.Is(err, ErrRateLimited) still holds for a 429.
type RetryLaterError struct {
	After time.Duration
	Err   error
}

// Error says how long to wait and why.
func (e *RetryLaterError) Error() string {
	return fmt.Sprintf("retry after %s: %v", e.After, e.Err)
}

// Unwrap exposes the answer that asked for the delay.
func (e *RetryLaterError) Unwrap() error { return e.Err }

// RetryAfter reports how long the product asked us to wait before trying
// again, for the task layer's retry delay. It is true for a *RetryLaterError
// and for a *StatusError that carried a Retry-After header.
func RetryAfter(err error) (time.Duration, bool) {
	if rl, ok := errors.AsType[*RetryLaterError](err); ok {
		return rl.After, true
	}
	if se, ok := errors.AsType[*StatusError](err); ok && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// RedirectError is a redirect the client did not follow (see
// ErrRedirectNotFollowed). Location is reported so that an operator can see
// where a renamed site now lives; it is never called with the JWT.
type RedirectError struct {
	Method     string
	Route      string
	StatusCode int
	Location   string
}

// Error names the refused Location so an operator can see where the site moved.
func (e *RedirectError) Error() string {
	return fmt.Sprintf("product: %s %s: %d redirect to %q not followed", e.Method, e.Route, e.StatusCode, e.Location)
}

// Is makes errors.Is(err, ErrRedirectNotFollowed) true.
func (e *RedirectError) Is(target error) bool { return target == ErrRedirectNotFollowed }

// Final reports whether err carries an answer that no retry of the same
// request can change: the product refused our token (401), the action (403),
// the resource (404) or the request (400, 422); the tenant's baseUrl is not an
// allowed host; a data download's address is not allowed; the tenant has no secret; the answer is over the size limit.
// Rate limits, server errors and network failures are not final.
func Final(err error) bool {
	for _, target := range []error{ErrUnauthorized, ErrForbidden, ErrNotFound, ErrBadRequest,
		ErrHostNotAllowed, ErrNoSecret, ErrResponseTooLarge, ErrAddressNotAllowed} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
