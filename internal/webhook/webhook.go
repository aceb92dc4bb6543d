// Package webhook signs and verifies HTTP deliveries per the Standard Webhooks
// specification (https://www.standardwebhooks.com/), the format of the events
// the worker forwards to the vendor's backend.
//
// A delivery carries three headers: webhook-id (the message's identity, the
// same on every retry, so the receiver's idempotency key), webhook-timestamp
// (Unix seconds of this attempt) and webhook-signature, a space-separated list
// of "v1,<base64 HMAC-SHA256>" signatures of "id.timestamp.body" under the
// secret's key. Secrets are written "whsec_" followed by the standard base64 of
// the key; the key is 24 to 64 random bytes. A Secret never prints its key.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of a signed delivery.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix starts every secret's text form.
const secretPrefix = "whsec_"

// Key sizes a Secret accepts, in bytes.
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// verifier's clock, as the specification recommends.
const DefaultTolerance = 5 * time.Minute

// Errors Verify returns; each is wrapped with the detail.
var (
	// ErrMissingHeaders: a webhook-* header is absent.
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	// ErrTimestamp: the timestamp is malformed or too far from now.
	ErrTimestamp = errors.New("webhook: timestamp outside the tolerance")
	// ErrSignature: no v1 signature matches.
	ErrSignature = errors.New("webhook: no matching signature")
)

// ErrSecret is wrapped by ParseSecret's errors.
var ErrSecret = errors.New("webhook: invalid secret")

// Secret is a Standard Webhooks signing key. The zero Secret signs nothing;
// use ParseSecret.
type Secret struct {
	key []byte
}

// ParseSecret parses the text form of a secret: "whsec_" followed by the
// standard (padded) base64 of a 24 to 64 byte key. Errors wrap ErrSecret and
// never repeat the secret.
func ParseSecret(s string) (Secret, error) {
	raw, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: it must start with %q", ErrSecret, secretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(raw)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: what follows %q is not standard base64", ErrSecret, secretPrefix)
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return Secret{}, fmt.Errorf("%w: the key is %d bytes, want %d to %d", ErrSecret, len(key), MinKeyBytes, MaxKeyBytes)
	}
	return Secret{key: key}, nil
}

// String returns a redacted form, so that a Secret printed by mistake shows no
// key.
func (s Secret) String() string { return secretPrefix + "[redacted]" }

// LogValue redacts the secret in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// GoString redacts the secret in %#v.
func (s Secret) GoString() string { return s.String() }

// Valid reports whether s holds a key.
func (s Secret) Valid() bool { return len(s.key) > 0 }

// Sign returns the v1 signature of a delivery of body with message id at ts,
// as it goes in the webhook-signature header ("v1,<base64>").
func (s Secret) Sign(id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(s.mac(id, strconv.FormatInt(ts.Unix(), 10), body))
}

func (s Secret) mac(id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SetHeaders sets the three webhook-* headers of a delivery of body with
// message id at ts on h.
func (s Secret) SetHeaders(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(id, ts, body))
}

// Verify checks a delivery's headers against body: the timestamp within
// tolerance of now (DefaultTolerance when tolerance is 0) and one of the v1
// signatures matching, compared in constant time. It returns the message id.
func (s Secret) Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration) (string, error) {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return "", fmt.Errorf("%w: %s from now", ErrTimestamp, d.Round(time.Second))
	}
	want := s.mac(id, tsText, body)
	for _, sig := range strings.Fields(sigs) {
		ver, b64, ok := strings.Cut(sig, ",")
		if !ok || ver != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return id, nil
		}
	}
	return "", ErrSignature
}
