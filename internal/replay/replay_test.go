package replay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/internal/replay"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func TestCache_BindsATokenToItsFirstBody(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	c := replay.New(rdb)
	ctx := t.Context()
	until := time.Now().Add(3 * time.Minute)
	victim, attacker := []byte(`{"sharedSecret":"victim"}`), []byte(`{"sharedSecret":"attacker"}`)

	steps := []struct {
		name  string
		token string
		body  []byte
		err   error
	}{
		{"first use", "tok-1", victim, nil},
		{"Atlassian's retry, same body", "tok-1", victim, nil},
		{"same token, another body", "tok-1", attacker, replay.ErrConflict},
		{"the body still bound to the first", "tok-1", victim, nil},
		{"another token with the other body", "tok-2", attacker, nil},
	}
	for _, s := range steps {
		if err := c.Bind(ctx, s.token, s.body, until); !errors.Is(err, s.err) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.err)
		}
	}
}

// An entry written by the previous version (the body's digest, a colon and
// a state) still binds its token to its body.
func TestCache_ReadsEntriesOfThePreviousVersion(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	c := replay.New(rdb)
	ctx := t.Context()
	until := time.Now().Add(3 * time.Minute)
	if err := c.Bind(ctx, "tok", []byte("body"), until); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys = %q, %v; want one", keys, err)
	}
	v := rdb.Get(ctx, keys[0]).Val()
	if err := rdb.Set(ctx, keys[0], v+":d", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(ctx, "tok", []byte("body"), until); err != nil {
		t.Errorf("same body under an old entry: %v", err)
	}
	if err := c.Bind(ctx, "tok", []byte("other"), until); !errors.Is(err, replay.ErrConflict) {
		t.Errorf("another body under an old entry: err = %v, want ErrConflict", err)
	}
}

func TestCache_RemembersUntilExpiryPlusLeeway(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	c := replay.New(rdb)
	ctx := t.Context()
	for _, tc := range []struct {
		name     string
		in       time.Duration
		min, max time.Duration
	}{
		{"3 minutes and the leeway", 3*time.Minute + 30*time.Second, 3*time.Minute + 25*time.Second, 3*time.Minute + 30*time.Second},
		{"already past: one second", -time.Minute, 500 * time.Millisecond, time.Second},
		{"a year: capped", 365 * 24 * time.Hour, replay.MaxTTL - 5*time.Second, replay.MaxTTL},
	} {
		const token = "secret-token-value"
		if err := c.Bind(ctx, token, []byte("b"), time.Now().Add(tc.in)); err != nil {
			t.Fatal(err)
		}
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("%s: keys = %q, %v; want one", tc.name, keys, err)
		}
		if strings.Contains(keys[0], token) {
			t.Errorf("the raw token is in the key %q", keys[0])
		}
		if ttl := rdb.PTTL(ctx, keys[0]).Val(); ttl < tc.min || ttl > tc.max {
			t.Errorf("%s: TTL %s, want within [%s, %s]", tc.name, ttl, tc.min, tc.max)
		}
		if err := rdb.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCache_RedisDownIsUnavailableNotAccepted(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.ClosedAddr(t), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	c := replay.New(rdb)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Bind(ctx, "tok", []byte("b"), time.Now().Add(time.Minute)); !errors.Is(err, replay.ErrUnavailable) {
		t.Fatalf("Bind with Redis down: err = %v, want ErrUnavailable", err)
	}
}
