package tenant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/connect"
)

// fakeClock is a settable clock for the cache's TTL.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func newTestCache(b *testBundle, ttl time.Duration) (*SecretCache, *fakeClock) {
	clock := &fakeClock{now: base}
	c := NewSecretCache(b.store, ttl)
	c.now = clock.Now
	return c, clock
}

func cached(t *testing.T, c *SecretCache, clientKey string, refresh bool) string {
	t.Helper()
	s, err := c.SharedSecret(testCtx(t), clientKey, refresh)
	if err != nil {
		t.Fatalf("cache.SharedSecret(%s, %v): %v", clientKey, refresh, err)
	}
	return string(s)
}

func TestSecretCacheServesRefreshesAndInvalidates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, clock := newTestCache(b, time.Minute)
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s1"}), ts(1), ts(1))
	if got := cached(t, c, "ck", false); got != "s1" {
		t.Fatalf("first read = %q, want s1", got)
	}

	// Another receiver rotates the secret: this cache keeps serving s1 ...
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s2"}), ts(2), ts(2))
	if got := cached(t, c, "ck", false); got != "s1" {
		t.Errorf("cached read after a remote rotation = %q, want s1 (served from memory)", got)
	}
	// ... until verification fails and the caller refreshes.
	if got := cached(t, c, "ck", true); got != "s2" {
		t.Errorf("refresh = %q, want s2", got)
	}
	if got := cached(t, c, "ck", false); got != "s2" {
		t.Errorf("read after refresh = %q, want s2", got)
	}

	// A local install invalidates.
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s3"}), ts(3), ts(3))
	c.Invalidate("ck")
	if got := cached(t, c, "ck", false); got != "s3" {
		t.Errorf("read after Invalidate = %q, want s3", got)
	}

	// Entries expire.
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s4"}), ts(4), ts(4))
	clock.now = clock.now.Add(59 * time.Second)
	if got := cached(t, c, "ck", false); got != "s3" {
		t.Errorf("read before TTL = %q, want s3", got)
	}
	clock.now = clock.now.Add(time.Second)
	if got := cached(t, c, "ck", false); got != "s4" {
		t.Errorf("read at TTL = %q, want s4", got)
	}

	// Callers get their own copy.
	s, _ := c.SharedSecret(testCtx(t), "ck", false)
	s[0] = 'X'
	if got := cached(t, c, "ck", false); got != "s4" {
		t.Errorf("after mutating a returned secret, cache has %q", got)
	}
}

func TestSecretCacheIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Hour)
	c.max = 2
	for _, ck := range []string{"a", "b", "c"} {
		b.install(t, payload(t, ck, nil), ts(1), ts(1))
	}
	cached(t, c, "a", false)
	cached(t, c, "b", false)
	cached(t, c, "a", false) // a is now more recently used than b
	cached(t, c, "c", false)
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	// b was evicted: rotating it in the store shows through without a refresh,
	// while a still comes from memory.
	b.install(t, payload(t, "a", map[string]any{"sharedSecret": "a2"}), ts(2), ts(2))
	b.install(t, payload(t, "b", map[string]any{"sharedSecret": "b2"}), ts(2), ts(2))
	if got := cached(t, c, "a", false); got != "secret-of-a" {
		t.Errorf("a = %q, want the cached secret-of-a", got)
	}
	if got := cached(t, c, "b", false); got != "b2" {
		t.Errorf("b = %q, want b2 read from the store (evicted)", got)
	}
}

func TestSecretCacheDoesNotKeepAReadOvertakenByInvalidate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Hour)
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "old"}), ts(1), ts(1))
	// A read that started before an install + Invalidate finishes after them.
	gen := c.generation()
	stale, err := b.store.SharedSecret(context.Background(), "ck")
	if err != nil {
		t.Fatal(err)
	}
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "new"}), ts(2), ts(2))
	c.Invalidate("ck")
	c.put("ck", stale, gen)
	if got := cached(t, c, "ck", false); got != "new" {
		t.Errorf("cache = %q, want new (the stale read must not be cached)", got)
	}
}

// TestSecretCache_RemembersUnknownClientKeysBriefly: an unknown iss used to
// cost a Postgres query per request. Absence is now remembered for
// UnknownClientKeyTTL (the second lookup is answered from memory, even though
// another replica has since installed the tenant), a refresh reads the store,
// and the entry expires.
func TestSecretCache_RemembersUnknownClientKeysBriefly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, clock := newTestCache(b, time.Hour)
	unknown := func(what string) {
		t.Helper()
		_, err := c.SharedSecret(testCtx(t), "later", false)
		if !errors.Is(err, ErrNotFound) || !errors.Is(err, connect.ErrUnknownIssuer) {
			t.Fatalf("%s: err = %v, want an unknown issuer", what, err)
		}
	}
	unknown("first lookup")
	b.install(t, payload(t, "later", nil), ts(1), ts(1)) // through another replica: no Invalidate here
	unknown("lookup within the TTL, answered from memory")
	clock.now = clock.now.Add(UnknownClientKeyTTL - time.Second)
	unknown("lookup just before the TTL")
	clock.now = clock.now.Add(time.Second)
	if got := cached(t, c, "later", false); got != "secret-of-later" {
		t.Errorf("after the TTL = %q, want it read from the store", got)
	}

	unknown2 := "other-later"
	if _, err := c.SharedSecret(testCtx(t), unknown2, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown2: %v", err)
	}
	b.install(t, payload(t, unknown2, nil), ts(2), ts(2))
	if got := cached(t, c, unknown2, true); got != "secret-of-"+unknown2 {
		t.Errorf("refresh = %q, want the store read past the remembered absence", got)
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
}

// TestSecretCache_InstallOnThisReplicaForgetsTheAbsence: an install of a new
// tenant must verify at once on the replica that took it, whatever was
// remembered before; and a not-found read overtaken by that install must not
// put the absence back.
func TestSecretCache_InstallOnThisReplicaForgetsTheAbsence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Hour)
	if _, err := c.SharedSecret(testCtx(t), "new", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	b.install(t, payload(t, "new", nil), ts(1), ts(1))
	c.Invalidate("new")
	if got := cached(t, c, "new", false); got != "secret-of-new" {
		t.Errorf("after install + Invalidate = %q, want the new secret at once", got)
	}

	gen := c.generation()
	b.install(t, payload(t, "raced", nil), ts(2), ts(2))
	c.Invalidate("raced")
	c.putAbsent("raced", gen) // a not-found read that started before the install
	if got := cached(t, c, "raced", false); got != "secret-of-raced" {
		t.Errorf("raced = %q, want the secret (the stale absence must not be kept)", got)
	}
}

// TestSecretCache_RememberedAbsencesAreBounded: anyone can send unknown
// issuers, so the memory of them is bounded, oldest dropped first, and never
// evicts a cached secret.
func TestSecretCache_RememberedAbsencesAreBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Hour)
	c.absentMax = 3
	b.install(t, payload(t, "real", map[string]any{"sharedSecret": "real-secret"}), ts(1), ts(1))
	if got := cached(t, c, "real", false); got != "real-secret" {
		t.Fatal(got)
	}
	for i := range 10 {
		_, _ = c.SharedSecret(testCtx(t), fmt.Sprintf("nobody-%d", i), false)
	}
	if n := c.absentLen(); n != 3 {
		t.Errorf("remembered absences = %d, want the bound 3", n)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d, want the real tenant still cached", c.Len())
	}
}

func TestSecretCacheConcurrentRefreshesAllSeeTheRotatedSecret(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Minute)
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s1"}), ts(1), ts(1))
	cached(t, c, "ck", false)
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s2"}), ts(2), ts(2))
	var wg sync.WaitGroup
	got := make([]string, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.SharedSecret(testCtx(t), "ck", true)
			if err != nil {
				t.Errorf("refresh %d: %v", i, err)
				return
			}
			got[i] = string(s)
		}()
	}
	wg.Wait()
	for i, g := range got {
		if g != "s2" {
			t.Errorf("refresh %d = %q, want s2", i, g)
		}
	}
	if s := cached(t, c, "ck", false); s != "s2" {
		t.Errorf("cache after refreshes = %q, want s2", s)
	}
}

func TestSecretCacheACancelledCallerDoesNotFailOthersSharingItsRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, _ := newTestCache(b, time.Minute)
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s1"}), ts(1), ts(1))
	for round := range 5 {
		c.Invalidate("ck")
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					ctx, cancel := context.WithCancel(testCtx(t))
					cancel() // this caller gives up at once
					if _, err := c.SharedSecret(ctx, "ck", false); err == nil {
						return // it may have found the secret already cached
					} else if !errors.Is(err, ErrUnavailable) {
						t.Errorf("round %d: cancelled caller err = %v, want ErrUnavailable", round, err)
					}
					return
				}
				s, err := c.SharedSecret(testCtx(t), "ck", false)
				if err != nil || string(s) != "s1" {
					t.Errorf("round %d: caller %d got %q, %v", round, i, s, err)
				}
			}()
		}
		wg.Wait()
	}
}
