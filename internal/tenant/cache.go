package tenant

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"

	"github.com/connectrelay/connectrelay/connect"
)

var _ connect.SecretStore = (*SecretCache)(nil)

// Secret cache defaults.
const (
	// DefaultSecretCacheTTL is how long a decrypted secret is reused when
	// NewSecretCache is given no TTL.
	DefaultSecretCacheTTL = 5 * time.Minute
	// SecretCacheSize bounds the number of cached secrets; the least recently used
	// entry is dropped beyond it.
	SecretCacheSize = 10_000
	// UnknownClientKeyTTL is how long a clientKey the store does not know is
	// remembered as unknown, so that a flood of tokens with an unknown iss
	// costs one query per clientKey and period, not one per request.
	UnknownClientKeyTTL = 30 * time.Second
	// UnknownClientKeyCacheSize bounds the remembered unknown clientKeys (anyone
	// can send them); the oldest is dropped beyond it, never a cached secret.
	UnknownClientKeyCacheSize = 10_000
	// LoadTimeout bounds one shared store read of a secret. It is shorter than
	// the receiver's request budget, so a hung database still answers 503 in time.
	LoadTimeout = 800 * time.Millisecond
)

// SecretCache keeps decrypted shared secrets in memory for the receiver's HS256
// verification, so a burst of enabled/disabled or migration webhooks does not cost a
// query and a decryption each. It is bounded (SecretCacheSize, least recently used
// dropped) and entries expire after the TTL.
//
// Another receiver may store a rotated secret at any time, so a caller whose
// verification fails with a cached secret asks again with refresh=true, which reads
// the store and replaces the entry.
//
// Absence is remembered too, briefly (UnknownClientKeyTTL, at most
// UnknownClientKeyCacheSize clientKeys, apart from the secrets): a request with an
// unknown iss must not cost a query each. An Invalidate forgets it, so a tenant
// installed through this receiver verifies at once; one installed through another
// receiver is found once the entry expires (a refresh reads the store anyway). A
// SecretCache is safe for concurrent use.
type SecretCache struct {
	store *Store
	ttl   time.Duration
	// loads collapses concurrent store reads of one clientKey: a burst of
	// requests with a bad signature for a known tenant (each of which asks for a
	// refresh) costs one query at a time, not one per request.
	loads singleflight.Group
	max   int
	now   func() time.Time

	mu      sync.Mutex
	lru     *list.List // of *cacheEntry, most recently used first
	entries map[string]*list.Element
	// absent remembers clientKeys the store did not know, oldest at the back.
	absent    *list.List // of *cacheEntry without a secret
	absentBy  map[string]*list.Element
	absentTTL time.Duration
	absentMax int
	// gen counts invalidations, so a read that started before an Invalidate does not
	// put back the secret the invalidation was meant to drop.
	gen uint64
}

type cacheEntry struct {
	clientKey string
	secret    []byte
	expires   time.Time
}

// NewSecretCache returns a cache reading from store; ttl <= 0 means
// DefaultSecretCacheTTL.
func NewSecretCache(store *Store, ttl time.Duration) *SecretCache {
	if ttl <= 0 {
		ttl = DefaultSecretCacheTTL
	}
	return &SecretCache{
		store:   store,
		ttl:     ttl,
		max:     SecretCacheSize,
		now:     time.Now,
		lru:     list.New(),
		entries: make(map[string]*list.Element),

		absent:    list.New(),
		absentBy:  make(map[string]*list.Element),
		absentTTL: UnknownClientKeyTTL,
		absentMax: UnknownClientKeyCacheSize,
	}
}

// SharedSecret returns the decrypted shared secret of clientKey, from memory when a
// fresh entry exists and refresh is false, otherwise from the store (updating the
// cache). The returned slice is the caller's own copy. It implements
// connect.SecretStore: an unknown tenant is an error wrapping both ErrNotFound and
// connect.ErrUnknownIssuer (a 401; the entry is dropped), any other failure one
// wrapping connect.ErrSecretUnavailable (a 503) and ErrUnavailable or ErrDecrypt,
// so that a database outage never looks like a bad token.
//
// A clientKey no tenant could have (empty, over 256 bytes, invalid UTF-8, control
// characters) is unknown without a store read: anyone can send one, and the
// database rejects some of them with errors that must not look like an outage.
func (c *SecretCache) SharedSecret(ctx context.Context, clientKey string, refresh bool) ([]byte, error) {
	if !plausibleClientKey(clientKey) {
		return nil, fmt.Errorf("%w: implausible clientKey: %w", connect.ErrUnknownIssuer, ErrNotFound)
	}
	secret, err := c.secret(ctx, clientKey, refresh)
	switch {
	case err == nil:
		return secret, nil
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: %w", connect.ErrUnknownIssuer, err)
	default:
		return nil, fmt.Errorf("%w: %w", connect.ErrSecretUnavailable, err)
	}
}

// secret is SharedSecret without the error mapping.
func (c *SecretCache) secret(ctx context.Context, clientKey string, refresh bool) ([]byte, error) {
	if !refresh {
		if secret, ok := c.lookup(clientKey); ok {
			return secret, nil
		}
		if c.knownAbsent(clientKey) {
			return nil, fmt.Errorf("secret of %s (unknown, remembered): %w", clientKey, ErrNotFound)
		}
	}
	// Refreshes and plain misses are collapsed separately: a refresh must not
	// join a plain miss, which may have started before the rotation it looks for.
	flight := "m:" + clientKey
	if refresh {
		flight = "r:" + clientKey
	}
	ch := c.loads.DoChan(flight, func() (any, error) {
		// The load serves every caller that joined it, so it must not end with
		// the first caller's context: a cancelled or budget-expired first
		// request would fail all the others with it.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), LoadTimeout)
		defer cancel()
		gen := c.generation()
		secret, err := c.store.SharedSecret(lctx, clientKey)
		switch {
		case err == nil:
			c.put(clientKey, secret, gen) // put keeps a copy of its own
		case errors.Is(err, ErrNotFound):
			c.putAbsent(clientKey, gen)
		}
		return secret, err
	})
	var (
		v   any
		err error
	)
	select {
	case res := <-ch:
		v, err = res.Val, res.Err
	case <-ctx.Done():
		// This caller gives up; the shared read goes on for the others.
		return nil, fmt.Errorf("%w: secret of %s: %w", ErrUnavailable, clientKey, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			c.drop(clientKey, false)
		}
		return nil, err
	}
	return bytes.Clone(v.([]byte)), nil
}

// Invalidate drops clientKey's entry, and forgets that it was unknown. Call it
// after a local install stored a new secret, so the next request of that tenant
// does not verify against the old one, nor is refused as unknown.
func (c *SecretCache) Invalidate(clientKey string) {
	c.drop(clientKey, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeAbsentLocked(clientKey)
}

// Purge drops every entry, for a subscriber that may have missed invalidations
// (see Invalidations).
func (c *SecretCache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.lru.Init()
	clear(c.entries)
}

// drop removes clientKey's entry. Only an Invalidate bumps the generation: a lookup
// of an unknown clientKey (anyone can send one) must not stop other entries from
// being cached.
func (c *SecretCache) drop(clientKey string, bump bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bump {
		c.gen++
	}
	c.removeLocked(clientKey)
}

func (c *SecretCache) removeLocked(clientKey string) {
	if el, ok := c.entries[clientKey]; ok {
		c.lru.Remove(el)
		delete(c.entries, clientKey)
	}
}

func (c *SecretCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *SecretCache) lookup(clientKey string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[clientKey]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.removeLocked(clientKey)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return bytes.Clone(e.secret), true
}

// put caches secret, read when the generation was gen, unless an Invalidate came
// in between (the read may predate the install that invalidated).
func (c *SecretCache) put(clientKey string, secret []byte, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.removeAbsentLocked(clientKey)
	e := &cacheEntry{clientKey: clientKey, secret: bytes.Clone(secret), expires: c.now().Add(c.ttl)}
	if el, ok := c.entries[clientKey]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[clientKey] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		c.removeLocked(c.lru.Back().Value.(*cacheEntry).clientKey)
	}
}

// knownAbsent reports whether clientKey was found unknown within absentTTL.
func (c *SecretCache) knownAbsent(clientKey string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.absentBy[clientKey]
	if !ok {
		return false
	}
	if !c.now().Before(el.Value.(*cacheEntry).expires) {
		c.removeAbsentLocked(clientKey)
		return false
	}
	return true
}

// putAbsent remembers that the store did not know clientKey, read when the
// generation was gen, unless an Invalidate came in between (the install it
// announced may have created the tenant after the read).
func (c *SecretCache) putAbsent(clientKey string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.removeAbsentLocked(clientKey)
	c.absentBy[clientKey] = c.absent.PushFront(&cacheEntry{clientKey: clientKey, expires: c.now().Add(c.absentTTL)})
	for c.absent.Len() > c.absentMax {
		c.removeAbsentLocked(c.absent.Back().Value.(*cacheEntry).clientKey)
	}
}

func (c *SecretCache) removeAbsentLocked(clientKey string) {
	if el, ok := c.absentBy[clientKey]; ok {
		c.absent.Remove(el)
		delete(c.absentBy, clientKey)
	}
}

// absentLen reports how many unknown clientKeys are remembered.
func (c *SecretCache) absentLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.absent.Len()
}

// maxClientKeyLength bounds an issuer worth looking up; real clientKeys are UUIDs
// or short "jira:..." strings.
const maxClientKeyLength = 256

func plausibleClientKey(k string) bool {
	if k == "" || len(k) > maxClientKeyLength || !utf8.ValidString(k) {
		return false
	}
	for _, r := range k {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Len reports how many secrets are cached, for metrics.
func (c *SecretCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
