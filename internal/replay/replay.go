// Package replay binds each lifecycle token the receiver accepts to the body it
// came with, in Redis, until the token expires, before anything is changed.
//
// A Connect JWT's qsh covers the method, path and query but not the body, so a
// captured, still-valid lifecycle token could otherwise be sent again with
// another body (an attacker's shared secret in an installed). The cache
// remembers sha256(token) -> sha256(body) with SET NX until the token's exp plus
// the leeway: the same token with another body is a Conflict. The binding is
// made before the change and outlives it, so a genuine delivery that fails (503,
// rolled back) leaves its token bound to its body: only Atlassian's retry of the
// same body can use it. Whether a delivery was already applied (a copy) is the
// tenant store's to tell, in the transaction of the change (tenant.Delivery).
package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinels callers branch on.
var (
	// ErrConflict means the token was already seen with another body: a replay
	// (answer 401, change nothing).
	ErrConflict = errors.New("replay: token already used with another body")
	// ErrUnavailable means Redis could not be asked; the request must not be
	// accepted unchecked (answer 503).
	ErrUnavailable = errors.New("replay: cache unavailable")
)

// MaxTTL bounds how long a token is remembered. Signed installs live at most
// five minutes (connect.MaxInstallTokenLifetime) and Atlassian's HS256
// lifecycle tokens three; a tenant minting longer-lived tokens is remembered
// this long only, so that it cannot fill Redis with entries that never expire.
const MaxTTL = time.Hour

// Timeout bounds one Redis round trip of the cache when the caller's context
// has no earlier deadline.
const Timeout = 500 * time.Millisecond

// keyPrefix starts every key of the cache.
const keyPrefix = "connectrelay:replay:"

// Cache is the replay cache. It is safe for concurrent use.
type Cache struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// New returns a cache keeping its entries in rdb.
func New(rdb redis.UniversalClient) *Cache {
	return &Cache{rdb: rdb, now: time.Now}
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func key(token string) string { return keyPrefix + digest([]byte(token)) }

// ttl is how long an entry valid until until must live, at least one second
// and at most MaxTTL.
func (c *Cache) ttl(until time.Time) time.Duration {
	d := until.Sub(c.now())
	return min(max(d, time.Second), MaxTTL)
}

// Bind remembers that token came with body until until (the token's exp plus
// the verification leeway), unless it is already bound: nil when it is bound to
// body (now or before). Errors wrap ErrConflict for the same token with another
// body and ErrUnavailable when Redis cannot answer; the token is then not to be
// accepted.
func (c *Cache) Bind(ctx context.Context, token string, body []byte, until time.Time) error {
	if token == "" {
		return errors.New("replay: Bind: empty token")
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	bodySum := digest(body)
	// SET NX GET (Redis 7): one round trip that either binds the token or
	// returns what it is bound to.
	prev, err := c.rdb.SetArgs(ctx, key(token), bodySum,
		redis.SetArgs{Mode: "NX", Get: true, TTL: c.ttl(until)}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("%w: bind token: %w", ErrUnavailable, err)
	}
	// Entries written by an earlier version carry a state after a colon.
	if sum, _, _ := strings.Cut(prev, ":"); sum != bodySum {
		return fmt.Errorf("%w (first body sha256 %.12s…, this one %.12s…)", ErrConflict, sum, bodySum)
	}
	return nil
}
