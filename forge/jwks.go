package forge

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// maxJWKSBody bounds a JWKS response.
const maxJWKSBody = 1 << 20

// minRSABits is the smallest RSA modulus accepted from the JWKS.
const minRSABits = 2048

// keySet caches Atlassian's FIT keys by kid. It refreshes on demand only (no
// background goroutine): when the TTL has passed, or when a kid is unknown,
// at most once per minRefresh, with concurrent refreshes collapsed. A failed
// refresh keeps the last good set.
type keySet struct {
	url        string
	client     *http.Client
	timeout    time.Duration
	ttl        time.Duration
	minRefresh time.Duration
	now        func() time.Time
	log        *slog.Logger

	flight singleflight.Group

	mu          sync.Mutex
	keys        map[string]*rsa.PublicKey // nil until the first good fetch
	fetchedAt   time.Time                 // of the current keys
	lastAttempt time.Time                 // start of the last refresh, good or not
}

// key returns the key for kid. Errors wrap ErrUnknownKey or
// ErrKeysUnavailable.
func (s *keySet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	s.mu.Lock()
	now := s.now()
	keys := s.keys
	mayRefresh := s.lastAttempt.IsZero() || now.Sub(s.lastAttempt) >= s.minRefresh
	stale := keys == nil || now.Sub(s.fetchedAt) >= s.ttl
	k, found := keys[kid]
	s.mu.Unlock()

	switch {
	case keys == nil:
		// Cold: always try (collapsed), there is nothing else to use.
	case found && (!stale || !mayRefresh):
		return k, nil
	case !found && !mayRefresh:
		return nil, fmt.Errorf("%w: kid %q is not in the JWKS (refreshed less than %s ago)", ErrUnknownKey, kid, s.minRefresh)
	}
	if err := s.refresh(ctx); err != nil && keys == nil {
		return nil, err
	}
	s.mu.Lock()
	k, found = s.keys[kid]
	s.mu.Unlock()
	if !found {
		return nil, fmt.Errorf("%w: kid %q is not in the JWKS", ErrUnknownKey, kid)
	}
	return k, nil
}

// refresh fetches the JWKS once for all concurrent callers. On failure the
// previous keys stay in place and a warning is logged; the error wraps
// ErrKeysUnavailable.
func (s *keySet) refresh(ctx context.Context) error {
	ch := s.flight.DoChan("jwks", func() (any, error) {
		s.mu.Lock()
		s.lastAttempt = s.now()
		s.mu.Unlock()
		// Detached from the first caller's cancellation, bounded by timeout,
		// so that one impatient caller does not fail the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		keys, err := s.fetch(fctx)
		if err != nil {
			s.log.Warn("forge: JWKS refresh failed; keeping the last good key set", "url", s.url, "error", err)
			return nil, err
		}
		s.mu.Lock()
		s.keys, s.fetchedAt = keys, s.now()
		s.mu.Unlock()
		return nil, nil
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrKeysUnavailable, ctx.Err())
	}
}

// fetch GETs and parses the JWKS.
func (s *keySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch JWKS: %w", ErrKeysUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("%w: JWKS answered %d", ErrKeysUnavailable, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read JWKS: %w", ErrKeysUnavailable, err)
	}
	if len(body) > maxJWKSBody {
		return nil, fmt.Errorf("%w: JWKS is larger than %d bytes", ErrKeysUnavailable, maxJWKSBody)
	}
	keys, err := ParseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	return keys, nil
}

// JWK is one JSON Web Key of a key set, with the members an RSA signing key
// has (RFC 7517, RFC 7518 §6.3); N and E are base64url without padding.
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// JWKSet is a JSON Web Key Set, the document served at a JWKS URL.
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

// ParseJWKS parses a JSON Web Key Set and returns its usable keys by kid:
// kty RSA, use "sig" or absent, alg RS256 or absent, a kid, and a modulus of
// at least 2048 bits. Other keys are skipped; a set without usable keys, or
// invalid JSON, is an error.
func ParseJWKS(body []byte) (map[string]*rsa.PublicKey, error) {
	var set JWKSet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON key set: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(set.Keys))
	var skipped []error
	for _, k := range set.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "RS256") || !validKid(k.Kid) {
			skipped = append(skipped, fmt.Errorf("key %q: not an RS256 signing key", k.Kid))
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			skipped = append(skipped, fmt.Errorf("key %q: bad n or e", k.Kid))
			continue
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < minRSABits || pub.E < 3 || pub.E%2 == 0 {
			skipped = append(skipped, fmt.Errorf("key %q: RSA key of %d bits or exponent %d refused", k.Kid, pub.N.BitLen(), pub.E))
			continue
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS has no usable RS256 key: %w", errors.Join(skipped...))
	}
	return keys, nil
}
