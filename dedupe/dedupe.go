// Package dedupe stops a worker from repeating work it has already completed when
// a task is delivered again: Atlassian re-sends migration webhooks until it sees a
// 200, asynq re-runs a task whose worker died, and an operator may re-run an
// archived task by hand. Deduplication is keyed by the event's messageId or, when
// there is none, by a key derived from its content (see migration.Event.DedupeKey).
//
// # Layers
//
// A migration event meets three layers of deduplication; each covers a failure
// the others do not:
//
//   - At enqueue (package tasks), the task's deterministic TaskID (tenant and
//     dedupe key, kept 14 days): a re-sent webhook finds its task and is
//     acknowledged without a second task. It cannot see a task that asynq
//     already deleted, and does nothing against one task running twice.
//   - In the worker (this package), a claim and a done marker per tenant and
//     dedupe key: a task that asynq runs again (its worker died, an operator
//     re-ran it, two tasks slipped through the first layer) does not repeat the
//     event's effects, and two workers never handle the same event at once.
//   - In PostgreSQL (internal/migration), each event recorded once per tenant
//     and dedupe key and each transition idempotent under the transfer's row
//     lock: the correctness backstop when Redis lost its keys (a failover
//     without persistence, an eviction). The two Redis layers only narrow how
//     often the state machine sees a repeated event; it does not rely on them.
//
// The license sweep uses a Store of its own (another key prefix) to run once a
// day across all workers.
//
// # Protocol
//
// A worker calls Store.Claim before handling an event. The claim is a Redis key
// set with SET NX and a short TTL (Options.ClaimTTL) that holds a random owner
// token, so that exactly one worker handles a key at a time; the others get
// ErrInProgress and should retry later. When the handler has succeeded the worker
// calls Claim.Done, which in one atomic step writes a done marker that lives for
// Options.DoneTTL and drops the claim; later claims of that key get ErrAlreadyDone
// and the worker acknowledges the task without running the handler. When the
// handler fails the worker calls Claim.Release so that a retry can claim the key
// at once. Release (and the claim removal in Done) only deletes the claim if it
// still holds this worker's token: a worker whose claim expired never removes the
// claim of the worker that took over.
//
// # Guarantee
//
// What is exactly-once: a handler that completed and reached Done is not run
// again for the same key while the done marker lives (DoneTTL, 14 days by default,
// the window in which AMP accepts calls for a transfer). Side effects that are
// themselves idempotent per key — for example the per-s3Key import that the
// migration package records in PostgreSQL under a unique key — happen exactly
// once, whatever the number of deliveries.
//
// What is only at-least-once: everything between the start of the handler and
// Done. A worker that crashes after a side effect but before Done leaves no done
// marker; its claim expires after ClaimTTL (20 s by default: a live worker keeps
// its claim with Claim.KeepAlive, so a dead worker's events resume within about
// half a minute, not after the longest run a handler may have) and the next
// delivery runs the handler again. A handler whose claim was lost (its worker
// stalled for longer than ClaimTTL) may also run concurrently with a second
// delivery. So every side effect must be
// idempotent on its own; this package narrows the window in which a repeat can
// happen, it does not close it. Redis itself is not durable storage: if the done
// marker is lost (failover without persistence, eviction) the handler runs again,
// which per-effect idempotency makes harmless.
//
// This package is not part of the module's API and may change.
package dedupe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Default option values, used when the corresponding Options field is zero.
const (
	DefaultPrefix   = "connectrelay:dedupe:"
	DefaultClaimTTL = 20 * time.Second
	DefaultDoneTTL  = 14 * 24 * time.Hour
)

// ErrAlreadyDone is returned by Store.Claim when a done marker exists for the key:
// the handler completed before, and the caller should acknowledge without running
// it again.
var ErrAlreadyDone = errors.New("dedupe: already done")

// ErrInProgress is returned by Store.Claim when another worker holds the claim on
// the key: the caller should retry later (the claim expires after ClaimTTL if its
// holder died).
var ErrInProgress = errors.New("dedupe: in progress elsewhere")

// ErrClaimLost is returned by Claim.Release, Claim.Extend and Claim.Done when the
// claim no longer holds this worker's token: it expired, and another worker may
// have claimed the key since. Done still writes the done marker in that case,
// because the handler did complete.
var ErrClaimLost = errors.New("dedupe: claim expired or taken over")

// Options configure a Store. Zero values select the defaults.
type Options struct {
	// Prefix starts every Redis key this store writes. Default DefaultPrefix
	// ("connectrelay:dedupe:").
	Prefix string
	// ClaimTTL bounds how long a crashed worker's claim blocks a retry. A live
	// worker keeps its claim with Claim.KeepAlive (or Extend), so it need not
	// cover a whole run of the handler. Default DefaultClaimTTL (20 seconds).
	ClaimTTL time.Duration
	// DoneTTL is how long a completed key is remembered. Default DefaultDoneTTL
	// (14 days, the window in which AMP re-sends and accepts calls for a transfer).
	DoneTTL time.Duration
	// Logger receives warnings (a claim lost before Done). Default slog.Default().
	Logger *slog.Logger
}

// Store claims and completes keys in Redis. It is safe for concurrent use; one
// Store serves all workers of a process.
type Store struct {
	rdb      redis.UniversalClient
	prefix   string
	claimTTL time.Duration
	doneTTL  time.Duration
	log      *slog.Logger
}

// New returns a Store on rdb. rdb may be a single node, Sentinel or Cluster
// client: the two keys of one dedupe key share a hash tag, so the Lua scripts
// touch a single slot.
func New(rdb redis.UniversalClient, opts Options) *Store {
	s := &Store{rdb: rdb, prefix: opts.Prefix, claimTTL: opts.ClaimTTL, doneTTL: opts.DoneTTL, log: opts.Logger}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.claimTTL <= 0 {
		s.claimTTL = DefaultClaimTTL
	}
	if s.doneTTL <= 0 {
		s.doneTTL = DefaultDoneTTL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Claim is a worker's exclusive, expiring hold on a key. It is not safe for
// concurrent use by several goroutines.
type Claim struct {
	s     *Store
	key   string
	token string
}

// Key returns the dedupe key this claim holds, for logging.
func (c *Claim) Key() string { return c.key }

// The claim and done keys of one dedupe key share the hash tag "{key}" so that a
// Cluster routes both to one slot. If key itself contains braces the tag is cut at
// the first "}", which is still the same for both keys.
func (s *Store) claimKey(key string) string { return s.prefix + "{" + key + "}:claim" }
func (s *Store) doneKey(key string) string  { return s.prefix + "{" + key + "}:done" }

// claimScript: KEYS[1]=done, KEYS[2]=claim; ARGV[1]=token, ARGV[2]=ttl ms.
// Returns 1 claimed, 2 already done, 3 held by someone else. Checking the done
// marker and setting the claim in one script means a key that is completed between
// the two steps can not be claimed again.
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 3
`)

// doneScript: KEYS[1]=done, KEYS[2]=claim; ARGV[1]=token, ARGV[2]=done ttl ms.
// Returns 1 if the claim was ours and dropped, 0 if it had been lost.
var doneScript = redis.NewScript(`
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
`)

// releaseScript: KEYS[1]=claim; ARGV[1]=token. Compare-and-delete.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)

// extendScript: KEYS[1]=claim; ARGV[1]=token, ARGV[2]=ttl ms. Compare-and-expire.
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// Claim takes the key for this worker for ClaimTTL. It returns ErrAlreadyDone if
// the key was completed within DoneTTL, ErrInProgress if another worker holds it,
// and a wrapped Redis error otherwise (the caller should fail the task so that it
// is retried: a lost dedupe check must not turn into a silently skipped event).
func (s *Store) Claim(ctx context.Context, key string) (*Claim, error) {
	if key == "" {
		return nil, errors.New("dedupe: empty key")
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	res, err := claimScript.Run(ctx, s.rdb, []string{s.doneKey(key), s.claimKey(key)},
		token, s.claimTTL.Milliseconds()).Int()
	if err != nil {
		return nil, fmt.Errorf("dedupe: claim %q: %w", key, err)
	}
	switch res {
	case 1:
		return &Claim{s: s, key: key, token: token}, nil
	case 2:
		return nil, fmt.Errorf("dedupe: claim %q: %w", key, ErrAlreadyDone)
	case 3:
		return nil, fmt.Errorf("dedupe: claim %q: %w", key, ErrInProgress)
	default:
		return nil, fmt.Errorf("dedupe: claim %q: unexpected script result %d", key, res)
	}
}

// Done records that the handler for the claimed key completed: it writes the done
// marker (DoneTTL) and drops the claim in one atomic step, so no other worker can
// claim the key between the two. If the claim had been lost the marker is still
// written and the error wraps ErrClaimLost, for the caller to log: another worker
// may have run the handler concurrently.
func (c *Claim) Done(ctx context.Context) error {
	s := c.s
	res, err := doneScript.Run(ctx, s.rdb, []string{s.doneKey(c.key), s.claimKey(c.key)},
		c.token, s.doneTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("dedupe: done %q: %w", c.key, err)
	}
	if res != 1 {
		s.log.WarnContext(ctx, "dedupe claim lost before done; done marker written anyway",
			slog.String("key", c.key))
		return fmt.Errorf("dedupe: done %q: %w", c.key, ErrClaimLost)
	}
	return nil
}

// Release drops the claim after a failed handler so that a retry can claim the
// key immediately instead of waiting for ClaimTTL. It only deletes the claim if it
// still holds this worker's token; otherwise it returns an error wrapping
// ErrClaimLost and leaves the other worker's claim alone.
func (c *Claim) Release(ctx context.Context) error {
	s := c.s
	res, err := releaseScript.Run(ctx, s.rdb, []string{s.claimKey(c.key)}, c.token).Int()
	if err != nil {
		return fmt.Errorf("dedupe: release %q: %w", c.key, err)
	}
	if res != 1 {
		return fmt.Errorf("dedupe: release %q: %w", c.key, ErrClaimLost)
	}
	return nil
}

// Extend resets the claim's TTL to ClaimTTL, for a handler that may run longer
// than ClaimTTL: call it periodically so that a live worker keeps its claim. It
// returns an error wrapping ErrClaimLost if the claim is no longer ours.
func (c *Claim) Extend(ctx context.Context) error {
	s := c.s
	res, err := extendScript.Run(ctx, s.rdb, []string{s.claimKey(c.key)}, c.token, s.claimTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("dedupe: extend %q: %w", c.key, err)
	}
	if res != 1 {
		return fmt.Errorf("dedupe: extend %q: %w", c.key, ErrClaimLost)
	}
	return nil
}

// KeepAlive extends the claim every third of ClaimTTL until stop is called or
// ctx ends, so that a live worker keeps a claim that expires soon after the
// worker dies. If an extension finds the claim lost, lost is called once with
// the error (the caller should stop its work: another worker may take the key)
// and the extensions stop. A failed extension for another reason (Redis briefly
// unreachable) is retried at the next tick. stop waits for the extending
// goroutine to finish and must be called before Done or Release.
func (c *Claim) KeepAlive(ctx context.Context, lost func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(c.s.claimTTL/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ectx, ecancel := context.WithTimeout(ctx, c.s.claimTTL/3)
			err := c.Extend(ectx)
			ecancel()
			if errors.Is(err, ErrClaimLost) {
				c.s.log.WarnContext(ctx, "dedupe claim lost while the work ran", slog.String("key", c.key))
				if lost != nil {
					lost(err)
				}
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// IsDone reports whether a done marker exists for key, for callers (the receiver,
// status pages) that only want to know and must not claim.
func (s *Store) IsDone(ctx context.Context, key string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.doneKey(key)).Result()
	if err != nil {
		return false, fmt.Errorf("dedupe: is done %q: %w", key, err)
	}
	return n == 1, nil
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("dedupe: owner token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
