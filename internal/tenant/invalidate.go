package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// InvalidationTimeout bounds publishing one invalidation and the first
// subscription.
const InvalidationTimeout = 500 * time.Millisecond

// invalidationPing is how long the subscriber waits for a message before it
// pings, so a silently dead connection is noticed (and its cache purged).
const invalidationPing = 15 * time.Second

// InvalidationChannel is the Redis pub/sub channel on which the receivers of one
// app announce rotated secrets. Pub/sub is not scoped by Redis logical
// database, so the channel names the database and the app key.
func InvalidationChannel(db int, appKey string) string {
	return fmt.Sprintf("connectrelay:%d:%s:secret-invalidated", db, appKey)
}

// Invalidations keep the SecretCaches of every receiver replica in step: an
// install on one replica publishes the clientKey (after its commit), and every
// replica's subscriber drops that entry, so an old secret stops verifying
// everywhere within a round trip instead of after the cache TTL. The TTL stays
// the backstop for an announcement that is lost; a subscriber that loses its
// connection purges its whole cache, since it may have missed some.
type Invalidations struct {
	cache   *SecretCache
	rdb     redis.UniversalClient
	channel string
	log     *slog.Logger
	done    chan struct{}
}

// NewInvalidations returns the invalidations of cache over rdb on channel (see
// InvalidationChannel); log nil means slog.Default.
func NewInvalidations(cache *SecretCache, rdb redis.UniversalClient, channel string, log *slog.Logger) *Invalidations {
	if log == nil {
		log = slog.Default()
	}
	return &Invalidations{cache: cache, rdb: rdb, channel: channel, log: log, done: make(chan struct{})}
}

// Invalidate drops clientKey's entry here and tells every subscribed replica to
// drop it. Call it after the install that stored a new secret committed. The
// error wraps ErrUnavailable when Redis cannot take the announcement; the local
// entry is dropped regardless.
func (i *Invalidations) Invalidate(ctx context.Context, clientKey string) error {
	i.cache.Invalidate(clientKey)
	ctx, cancel := context.WithTimeout(ctx, InvalidationTimeout)
	defer cancel()
	if err := i.rdb.Publish(ctx, i.channel, clientKey).Err(); err != nil {
		return fmt.Errorf("%w: announce the new secret of %s: %w", ErrUnavailable, clientKey, err)
	}
	return nil
}

// Start subscribes (waiting for Redis to confirm, within InvalidationTimeout
// unless ctx ends sooner) and then drops announced entries until ctx ends; Done
// is closed when it has stopped (at once when Start fails). Call it once. The error wraps ErrUnavailable when the
// subscription cannot be made.
func (i *Invalidations) Start(ctx context.Context) error {
	ps := i.rdb.Subscribe(ctx)
	sctx, cancel := context.WithTimeout(ctx, InvalidationTimeout)
	defer cancel()
	if err := ps.Subscribe(sctx, i.channel); err != nil {
		_ = ps.Close()
		close(i.done)
		return fmt.Errorf("%w: subscribe to %s: %w", ErrUnavailable, i.channel, err)
	}
	if _, err := ps.ReceiveTimeout(sctx, InvalidationTimeout); err != nil {
		_ = ps.Close()
		close(i.done)
		return fmt.Errorf("%w: subscription to %s not confirmed: %w", ErrUnavailable, i.channel, err)
	}
	go func() {
		<-ctx.Done()
		_ = ps.Close() // unblocks the receive below
	}()
	go i.run(ctx, ps)
	return nil
}

// Done is closed once the subscriber started by Start has stopped.
func (i *Invalidations) Done() <-chan struct{} { return i.done }

func (i *Invalidations) run(ctx context.Context, ps *redis.PubSub) {
	defer close(i.done)
	backoff := 100 * time.Millisecond
	for {
		msg, err := ps.ReceiveTimeout(ctx, invalidationPing)
		if ctx.Err() != nil {
			return
		}
		var ne net.Error
		switch m := msg.(type) {
		case *redis.Message:
			i.cache.Invalidate(m.Payload)
			backoff = 100 * time.Millisecond
			continue
		case *redis.Subscription:
			// A (re)subscription: announcements made while the connection was
			// down are lost, so nothing cached before it can be trusted.
			i.cache.Purge()
			continue
		case nil:
		default:
			continue // a Pong
		}
		if errors.As(err, &ne) && ne.Timeout() {
			// Quiet channel: check that the connection is alive. A failed ping
			// makes the client reconnect and resubscribe.
			if perr := ps.Ping(ctx); perr == nil {
				continue
			}
		}
		i.cache.Purge()
		i.log.WarnContext(ctx, "secret invalidation subscription interrupted; cache purged",
			slog.String("channel", i.channel), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
