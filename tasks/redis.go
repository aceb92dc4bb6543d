package tasks

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// OpenRedis builds the process's one Redis client from REDIS_URL, with the
// timeouts the receiver needs to answer 503 well within a second when Redis is
// down or hung, and within a few hundred milliseconds when it is dead:
// go-redis's defaults (5 s read timeout, 3 retries, five dial attempts 100 ms
// apart, context deadlines ignored) would hold a request for 10 s. asynq's
// client, server and inspector, the dedupe claims and every other user of Redis
// are built on this client, so they share its pool, its timeouts and its
// failover.
//
// REDIS_URL is redis://, rediss:// (TLS), for Sentinel
// redis-sentinel://[:password@]host:port[,host:port...][/db]?master=NAME (the
// client asks the Sentinels for the current primary and follows a failover
// without a restart; the password is the primary's and the Sentinels'), or for
// Redis Cluster redis-cluster://[:password@]host:port[,host:port...] (any
// reachable nodes; the client learns the slots and follows resharding and
// failover; a cluster has database 0 only).
func OpenRedis(rawURL string) (redis.UniversalClient, error) {
	p, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch {
	case p.failover != nil:
		o := p.failover
		failFast(&o.ContextTimeoutEnabled, &o.DialTimeout, &o.DialerRetries, &o.DialerRetryTimeout,
			&o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.PoolTimeout)
		return redis.NewFailoverClient(o), nil
	case p.cluster != nil:
		o := p.cluster
		failFast(&o.ContextTimeoutEnabled, &o.DialTimeout, &o.DialerRetries, &o.DialerRetryTimeout,
			&o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.PoolTimeout)
		return redis.NewClusterClient(o), nil
	}
	o := p.single
	failFast(&o.ContextTimeoutEnabled, &o.DialTimeout, &o.DialerRetries, &o.DialerRetryTimeout,
		&o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.PoolTimeout)
	return redis.NewClient(o), nil
}

// failFast sets the timeouts every form of client shares (the three option
// types have the same fields but no common type). A dead Redis must cost one
// failed dial per command, not go-redis's five dial attempts 100 ms apart
// (which spent 840 ms of a callback's budget before its 503).
func failFast(ctxTimeout *bool, dial *time.Duration, dialRetries *int, dialRetryTimeout, read, write *time.Duration,
	maxRetries *int, pool *time.Duration) {
	*ctxTimeout = true
	*dial = 250 * time.Millisecond
	*dialRetries = 1
	*dialRetryTimeout = 50 * time.Millisecond
	*read = 700 * time.Millisecond
	*write = 700 * time.Millisecond
	*maxRetries = 1
	*pool = 700 * time.Millisecond
}

// RedisDB is the logical database REDIS_URL names (0 for a cluster, which has
// no other), for names that must differ between databases of one server.
func RedisDB(rawURL string) (int, error) {
	p, err := parseRedisURL(rawURL)
	switch {
	case err != nil:
		return 0, err
	case p.failover != nil:
		return p.failover.DB, nil
	case p.cluster != nil:
		return 0, nil
	}
	return p.single.DB, nil
}

// RedisConnOpt is REDIS_URL as asynq's scheduler and monitoring UI take it,
// which open connections of their own: the same server, database and
// credentials as OpenRedis, Sentinel and Cluster included.
func RedisConnOpt(rawURL string) (asynq.RedisConnOpt, error) {
	p, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	if f := p.failover; f != nil {
		return asynq.RedisFailoverClientOpt{MasterName: f.MasterName, SentinelAddrs: f.SentinelAddrs,
			SentinelPassword: f.SentinelPassword, Password: f.Password, DB: f.DB}, nil
	}
	if c := p.cluster; c != nil {
		return asynq.RedisClusterClientOpt{Addrs: c.Addrs, Username: c.Username, Password: c.Password}, nil
	}
	o := p.single
	return asynq.RedisClientOpt{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig}, nil
}

// parsedRedis is a REDIS_URL: one of single, failover and cluster is set.
type parsedRedis struct {
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// ErrRedisURL is wrapped by the errors of a REDIS_URL that does not parse.
var ErrRedisURL = errors.New("invalid REDIS_URL")

func parseRedisURL(rawURL string) (parsedRedis, error) {
	if strings.HasPrefix(rawURL, "redis-cluster://") {
		return parseClusterURL(rawURL)
	}
	if !strings.HasPrefix(rawURL, "redis-sentinel://") {
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return parsedRedis{}, fmt.Errorf("%w: %w", ErrRedisURL, err)
		}
		return parsedRedis{single: opt}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return parsedRedis{}, fmt.Errorf("%w: %w", ErrRedisURL, err)
	}
	f := &redis.FailoverOptions{MasterName: u.Query().Get("master")}
	if f.MasterName == "" {
		return parsedRedis{}, fmt.Errorf("%w: a redis-sentinel:// URL needs ?master=NAME", ErrRedisURL)
	}
	for _, a := range strings.Split(u.Host, ",") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return parsedRedis{}, fmt.Errorf("%w: Sentinel address %q must be host:port", ErrRedisURL, a)
		}
		f.SentinelAddrs = append(f.SentinelAddrs, a)
	}
	if pw, ok := u.User.Password(); ok {
		f.Password, f.SentinelPassword = pw, pw
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return parsedRedis{}, fmt.Errorf("%w: the database %q must be a number", ErrRedisURL, db)
		}
		f.DB = n
	}
	return parsedRedis{failover: f}, nil
}

// parseClusterURL parses redis-cluster://[[user]:password@]host:port[,host:port...][/0].
func parseClusterURL(rawURL string) (parsedRedis, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return parsedRedis{}, fmt.Errorf("%w: %w", ErrRedisURL, err)
	}
	if u.RawQuery != "" {
		return parsedRedis{}, fmt.Errorf("%w: a redis-cluster:// URL takes no query parameters (got %q)", ErrRedisURL, u.RawQuery)
	}
	c := &redis.ClusterOptions{}
	for _, a := range strings.Split(u.Host, ",") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return parsedRedis{}, fmt.Errorf("%w: cluster node address %q must be host:port", ErrRedisURL, a)
		}
		c.Addrs = append(c.Addrs, a)
	}
	if u.User != nil {
		c.Username = u.User.Username()
		c.Password, _ = u.User.Password()
	}
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return parsedRedis{}, fmt.Errorf("%w: a Redis Cluster has database 0 only, not %q", ErrRedisURL, db)
	}
	return parsedRedis{cluster: c}, nil
}
