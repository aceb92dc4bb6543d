// Package testenv gives integration tests their own, isolated piece of the real
// services the project depends on: a fresh PostgreSQL database and a claimed Redis
// logical database. Everything is cleaned up when the test ends, so tests pass when
// run twice in a row and when several packages run in parallel.
//
// The services are found through TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) and TEST_REDIS_ADDR
// (default 127.0.0.1:6379). A test that cannot reach them fails: these are not
// optional dependencies.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// AdminDatabaseURL is the URL of the server-level database used to create and drop
// per-test databases.
func AdminDatabaseURL() string {
	if v := os.Getenv("TEST_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// RedisAddr is the host:port of the Redis server tests use.
func RedisAddr() string {
	if v := os.Getenv("TEST_REDIS_ADDR"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

func randomSuffix() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// dbPrefix starts the name of every database testenv creates; the creation time
// follows it so that databases left behind by a killed test run can be recognised.
const dbPrefix = "cr_test_"

// staleAfter is the age after which a test database is assumed to be left over
// from a run that was killed before its cleanup (no test runs this long).
const staleAfter = 2 * time.Hour

// dropStale drops test databases older than staleAfter, best effort: a killed run
// (timeout, SIGKILL) never runs its cleanups, and its databases would otherwise
// pile up on the developer's server.
func dropStale(ctx context.Context, conn *pgx.Conn) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'cr\_test\_%'`)
	if err != nil {
		return
	}
	var stale []string
	cutoff := time.Now().Add(-staleAfter).Unix()
	for rows.Next() {
		var name string
		if rows.Scan(&name) != nil {
			continue
		}
		var created int64
		var rest string
		if _, err := fmt.Sscanf(strings.TrimPrefix(name, dbPrefix), "%d_%s", &created, &rest); err == nil && created < cutoff {
			stale = append(stale, name)
		}
	}
	rows.Close()
	for _, name := range stale {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

// PostgresURL creates an empty database for this test and returns its URL. The
// database is dropped (with FORCE, so open pools do not block it) when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	admin := AdminDatabaseURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: connect to postgres at %s: %v", admin, err)
	}
	defer conn.Close(context.Background())
	dropStale(ctx, conn)
	name := fmt.Sprintf("%s%d_%s", dbPrefix, time.Now().Unix(), randomSuffix())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testenv: connect to drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", admin, err)
	}
	u.Path = "/" + name
	return u.String()
}

// redisDBs is how many logical databases a default redis-server has. Database 0 is
// left alone (it holds the claims below and a developer's local data).
const redisDBs = 16

// Redis claims a Redis logical database (1..15) for this test, flushes it, and
// returns its number. The claim is a key in database 0 with a TTL, so a crashed test
// run releases it by itself. The database is flushed and released when the test ends.
func Redis(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
	defer ctl.Close()
	owner := randomSuffix()
	for {
		for db := 1; db < redisDBs; db++ {
			key := fmt.Sprintf("connectrelay:testenv:redis-db:%d", db)
			ok, err := ctl.SetNX(ctx, key, owner, 10*time.Minute).Result()
			if err != nil {
				t.Fatalf("testenv: claim redis db at %s: %v", RedisAddr(), err)
			}
			if !ok {
				continue
			}
			c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: db})
			if err := c.FlushDB(ctx).Err(); err != nil {
				c.Close()
				t.Fatalf("testenv: flush redis db %d: %v", db, err)
			}
			c.Close()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: db})
				defer c.Close()
				if err := c.FlushDB(ctx).Err(); err != nil {
					t.Errorf("testenv: flush redis db %d: %v", db, err)
				}
				ctl := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
				defer ctl.Close()
				if v, _ := ctl.Get(ctx, key).Result(); v == owner {
					ctl.Del(ctx, key)
				}
			})
			return db
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: no free redis database after waiting: %v", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RedisURL claims a database like Redis and returns it as a redis:// URL.
func RedisURL(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("redis://%s/%d", RedisAddr(), Redis(t))
}

// RedisClient claims a database like Redis and returns a client for it, closed when
// the test ends.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	db := Redis(t)
	c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: db})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ClosedAddr returns a loopback host:port on which nothing listens, for tests that
// inject "service unreachable".
func ClosedAddr(t testing.TB) string {
	t.Helper()
	// Port 1 on loopback is privileged and unused on these machines; a refused
	// connection is what we want. Keep it a function so the choice lives in one place.
	return strings.Join([]string{"127.0.0.1", "1"}, ":")
}

// RedisServer is a redis-server of a test's own, on a free loopback port, for
// tests that stop or kill Redis (never the shared one).
type RedisServer struct {
	Addr string
	proc *Process
}

// StartRedis starts a redis-server without persistence on a free loopback
// port and stops it when the test ends. It skips the test when redis-server is
// not installed.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	port := FreePort(t)
	all := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir()}, args...)
	proc, err := startProcess("redis-server", bin, nil, nil, all...)
	if err != nil {
		t.Fatal(err)
	}
	s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), proc: proc}
	t.Cleanup(s.Kill)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewClient(&redis.Options{Addr: s.Addr})
		err := c.Ping(context.Background()).Err()
		_ = c.Close()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would (idempotent).
func (s *RedisServer) Kill() { s.proc.Kill() }

// StartSentinel starts a Redis Sentinel of a test's own on a free loopback
// port, monitoring primary as master with a quorum of quorum and a short
// down-after (1 s), and stops it when the test ends.
func StartSentinel(t testing.TB, master, primary string, quorum int) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	port := FreePort(t)
	host, pport, err := net.SplitHostPort(primary)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s %d\n"+
		"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
		port, dir, master, host, pport, quorum, master, master, master)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	proc, err := startProcess("redis-sentinel", bin, nil, nil, conf, "--sentinel")
	if err != nil {
		t.Fatal(err)
	}
	s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), proc: proc}
	t.Cleanup(s.Kill)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		_, err := c.GetMasterAddrByName(context.Background(), master).Result()
		_ = c.Close()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel on %s did not answer: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
