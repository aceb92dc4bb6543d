package tasks

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// OpenRedis builds the process's one Redis client from a redis:// URL, with the
// timeouts the receiver needs to answer 503 well within a second when Redis is
// down or hung, and within a few hundred milliseconds when it is dead: go-redis's defaults (5 s read timeout, 3 retries, context deadlines
// ignored) would hold a request for 10 s. asynq's client, server
// and inspector are built on this client so they share its pool and timeouts.
func OpenRedis(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse REDIS_URL: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	// A dead Redis must cost one failed dial per command, not go-redis's five
	// dial attempts 100 ms apart (which spent 840 ms of a callback's budget
	// before its 503).
	opt.DialTimeout = 250 * time.Millisecond
	opt.DialerRetries = 1
	opt.DialerRetryTimeout = 50 * time.Millisecond
	opt.ReadTimeout = 700 * time.Millisecond
	opt.WriteTimeout = 700 * time.Millisecond
	opt.MaxRetries = 1
	opt.PoolTimeout = 700 * time.Millisecond
	return redis.NewClient(opt), nil
}
