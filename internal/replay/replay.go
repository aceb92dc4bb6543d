// Package replay binds each lifecycle token the receiver accepts to the body it
// came with, in Redis, until the token expires.
//
// A Connect JWT's qsh covers the method, path and query but not the body, so a
// captured, still-valid lifecycle token could otherwise be sent again with
// another body (an attacker's shared secret in an installed). The cache
// remembers sha256(token) -> sha256(body) with SET NX until the token's exp plus
// the leeway: the same token with another body is a Conflict, the same token
// with the same body a retry (Atlassian re-sends), told apart from a retry of a
// request that was already applied, so that a replayed enabled cannot undo a
// later disabled issued in the same iat second.
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

// Verdict is what Bind found.
type Verdict int

const (
	// Fresh: the token was not seen before; it is now bound to the body.
	Fresh Verdict = iota
	// Retry: the token was seen with the same body, but its request was not
	// marked Done (it failed, or is still running): apply it again.
	Retry
	// Done: the token was seen with the same body and its request was applied:
	// acknowledge it without applying it again.
	Done
)

// String names the verdict for logs.
func (v Verdict) String() string {
	switch v {
	case Fresh:
		return "fresh"
	case Retry:
		return "retry"
	case Done:
		return "done"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

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

const (
	statePending = "p"
	stateDone    = "d"
)

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
// the verification leeway) and says whether it was seen before. Errors wrap
// ErrConflict for the same token with another body and ErrUnavailable when
// Redis cannot answer; the token is then not to be accepted.
func (c *Cache) Bind(ctx context.Context, token string, body []byte, until time.Time) (Verdict, error) {
	if token == "" {
		return Fresh, errors.New("replay: Bind: empty token")
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	bodySum := digest(body)
	// SET NX GET (Redis 7): one round trip that either binds the token or
	// returns what it is bound to.
	prev, err := c.rdb.SetArgs(ctx, key(token), bodySum+":"+statePending,
		redis.SetArgs{Mode: "NX", Get: true, TTL: c.ttl(until)}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Fresh, nil
	case err != nil:
		return Fresh, fmt.Errorf("%w: bind token: %w", ErrUnavailable, err)
	}
	sum, state, _ := strings.Cut(prev, ":")
	if sum != bodySum {
		return Fresh, fmt.Errorf("%w (first body sha256 %.12s…, this one %.12s…)", ErrConflict, sum, bodySum)
	}
	if state == stateDone {
		return Done, nil
	}
	return Retry, nil
}

// MarkDone records that the request of token (bound to body) was applied, so
// that a later copy is answered without applying it again. Errors wrap
// ErrConflict when the token is bound to another body and ErrUnavailable when
// Redis cannot answer.
func (c *Cache) MarkDone(ctx context.Context, token string, body []byte, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	bodySum := digest(body)
	k := key(token)
	// Overwrite only an entry of the same body; a missing one (it expired
	// just now) is written afresh.
	res, err := markDone.Run(ctx, c.rdb, []string{k}, bodySum, bodySum+":"+stateDone, c.ttl(until).Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("%w: mark token done: %w", ErrUnavailable, err)
	}
	if res == 0 {
		return fmt.Errorf("%w: cannot mark it done", ErrConflict)
	}
	return nil
}

// markDone sets KEYS[1] to ARGV[2] (keeping its TTL, or with ARGV[3] ms when
// it is gone) unless it holds another body than ARGV[1]; 1 when set.
var markDone = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local sum = string.match(v, '^([^:]*)')
  if sum ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
`)
