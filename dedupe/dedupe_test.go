package dedupe_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func setup(t *testing.T, opts dedupe.Options) (*dedupe.Store, *redis.Client) {
	t.Helper()
	rdb := testenv.RedisClient(t)
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	return dedupe.New(rdb, opts), rdb
}

func TestConcurrentClaimsOnlyOneWins(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{})
	ctx := context.Background()
	const n = 32
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		won      int
		inProg   int
		otherErr []error
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			c, err := s.Claim(ctx, "msg:concurrent")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && c != nil:
				won++
			case errors.Is(err, dedupe.ErrInProgress):
				inProg++
			default:
				otherErr = append(otherErr, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won != 1 || inProg != n-1 || len(otherErr) != 0 {
		t.Fatalf("won=%d inProgress=%d other=%v; want 1, %d, none", won, inProg, otherErr, n-1)
	}
}

func TestDoneBlocksLaterClaims(t *testing.T) {
	t.Parallel()
	s, rdb := setup(t, dedupe.Options{Prefix: "t:", DoneTTL: time.Hour})
	ctx := context.Background()
	c, err := s.Claim(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if done, err := s.IsDone(ctx, "k1"); err != nil || done {
		t.Fatalf("IsDone before Done = %v, %v; want false, nil", done, err)
	}
	if err := c.Done(ctx); err != nil {
		t.Fatalf("Done: %v", err)
	}
	if _, err := s.Claim(ctx, "k1"); !errors.Is(err, dedupe.ErrAlreadyDone) {
		t.Fatalf("Claim after Done: got %v, want ErrAlreadyDone", err)
	}
	if done, err := s.IsDone(ctx, "k1"); err != nil || !done {
		t.Fatalf("IsDone after Done = %v, %v; want true, nil", done, err)
	}
	// The claim is gone and the marker carries the configured TTL.
	if n := rdb.Exists(ctx, "t:{k1}:claim").Val(); n != 0 {
		t.Errorf("claim key still exists after Done")
	}
	ttl := rdb.PTTL(ctx, "t:{k1}:done").Val()
	if ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("done marker TTL = %v, want about 1h", ttl)
	}
	// Other keys are unaffected.
	if _, err := s.Claim(ctx, "k2"); err != nil {
		t.Errorf("Claim of another key: %v", err)
	}
}

func TestReleaseAllowsReclaim(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{})
	ctx := context.Background()
	c, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("second Claim: got %v, want ErrInProgress", err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	c2, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatalf("Claim after Release: %v", err)
	}
	// Releasing twice: the second time the claim is another's.
	if err := c.Release(ctx); !errors.Is(err, dedupe.ErrClaimLost) {
		t.Fatalf("stale Release: got %v, want ErrClaimLost", err)
	}
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("stale Release removed the new claim: Claim got %v, want ErrInProgress", err)
	}
	if err := c2.Release(ctx); err != nil {
		t.Fatalf("Release of current claim: %v", err)
	}
}

func TestClaimExpiresAfterTTLAndOnlyOwnerReleases(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{ClaimTTL: 300 * time.Millisecond})
	ctx := context.Background()
	old, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("Claim while held: got %v, want ErrInProgress", err)
	}
	time.Sleep(600 * time.Millisecond)
	cur, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatalf("Claim after the TTL: %v", err)
	}
	// The crashed-and-back worker can neither release nor extend the new claim.
	if err := old.Release(ctx); !errors.Is(err, dedupe.ErrClaimLost) {
		t.Errorf("old Release: got %v, want ErrClaimLost", err)
	}
	if err := old.Extend(ctx); !errors.Is(err, dedupe.ErrClaimLost) {
		t.Errorf("old Extend: got %v, want ErrClaimLost", err)
	}
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("new claim was removed by its non-owner: Claim got %v", err)
	}
	if err := cur.Release(ctx); err != nil {
		t.Fatalf("owner Release: %v", err)
	}
}

func TestExtendKeepsClaim(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{ClaimTTL: 400 * time.Millisecond})
	ctx := context.Background()
	c, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		time.Sleep(200 * time.Millisecond)
		if err := c.Extend(ctx); err != nil {
			t.Fatalf("Extend: %v", err)
		}
	}
	// 800 ms after the claim, twice its TTL, it is still held.
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("Claim of an extended key: got %v, want ErrInProgress", err)
	}
}

func TestKeepAlive_HoldsTheClaimWhileTheWorkRunsAndStopsWithIt(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{ClaimTTL: 300 * time.Millisecond})
	ctx := context.Background()
	c, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	stop := c.KeepAlive(ctx, func(err error) { t.Errorf("claim lost: %v", err) })
	time.Sleep(time.Second) // more than three TTLs of work
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("Claim while kept alive: got %v, want ErrInProgress", err)
	}
	stop()
	// A worker that died (no Done, no Release) blocks the key only for the TTL.
	time.Sleep(450 * time.Millisecond)
	if _, err := s.Claim(ctx, "k"); err != nil {
		t.Fatalf("Claim after the holder stopped: %v, want the key free after one TTL", err)
	}
}

func TestKeepAlive_ReportsALostClaim(t *testing.T) {
	t.Parallel()
	s, rdb := setup(t, dedupe.Options{ClaimTTL: 300 * time.Millisecond})
	ctx := context.Background()
	c, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	stop := c.KeepAlive(ctx, func(err error) { lost <- err })
	defer stop()
	// Another worker took the key over (this one stalled past the TTL).
	if err := rdb.Set(ctx, dedupe.DefaultPrefix+"{k}:claim", "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		if !errors.Is(err, dedupe.ErrClaimLost) {
			t.Fatalf("lost with %v, want ErrClaimLost", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a lost claim was not reported")
	}
}

func TestDefaultClaimTTL_LetsADeadWorkersEventsResumeWithinHalfAMinute(t *testing.T) {
	if dedupe.DefaultClaimTTL > 20*time.Second {
		t.Fatalf("DefaultClaimTTL %s: a dead worker's claim would block its events longer than the 30 s target (with the 10 s retry)", dedupe.DefaultClaimTTL)
	}
}

func TestDoneAfterLostClaimStillMarksDone(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, dedupe.Options{ClaimTTL: 200 * time.Millisecond})
	ctx := context.Background()
	old, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	cur, err := s.Claim(ctx, "k")
	if err != nil {
		t.Fatalf("reclaim: %v", err)
	}
	if err := old.Done(ctx); !errors.Is(err, dedupe.ErrClaimLost) {
		t.Fatalf("Done on a lost claim: got %v, want ErrClaimLost", err)
	}
	if done, err := s.IsDone(ctx, "k"); err != nil || !done {
		t.Fatalf("IsDone = %v, %v; want true", done, err)
	}
	// The current holder's claim was not deleted by the old worker; it can still release it.
	if err := cur.Release(ctx); err != nil {
		t.Fatalf("current holder Release: %v", err)
	}
	if _, err := s.Claim(ctx, "k"); !errors.Is(err, dedupe.ErrAlreadyDone) {
		t.Fatalf("Claim: got %v, want ErrAlreadyDone", err)
	}
}

func TestKeysWithBracesAndPrefixesAreIsolated(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	a := dedupe.New(rdb, dedupe.Options{Prefix: "a:", Logger: quietLogger()})
	b := dedupe.New(rdb, dedupe.Options{Prefix: "b:", Logger: quietLogger()})
	ctx := context.Background()
	for _, key := range []string{"x}y", "{x}", "x"} {
		c, err := a.Claim(ctx, key)
		if err != nil {
			t.Fatalf("a.Claim(%q): %v", key, err)
		}
		if err := c.Done(ctx); err != nil {
			t.Fatalf("Done(%q): %v", key, err)
		}
	}
	for _, key := range []string{"x}y", "{x}", "x"} {
		if _, err := a.Claim(ctx, key); !errors.Is(err, dedupe.ErrAlreadyDone) {
			t.Errorf("a.Claim(%q) again: got %v, want ErrAlreadyDone", key, err)
		}
		if _, err := b.Claim(ctx, key); err != nil {
			t.Errorf("b.Claim(%q): %v; other prefix must not see a's marker", key, err)
		}
	}
	if _, err := a.Claim(ctx, ""); err == nil {
		t.Error("Claim of empty key succeeded")
	}
}

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{
		Addr: testenv.ClosedAddr(t), DialTimeout: 200 * time.Millisecond, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	s := dedupe.New(rdb, dedupe.Options{Logger: quietLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Claim(ctx, "k")
	if err == nil || c != nil {
		t.Fatalf("Claim = %v, %v; want an error", c, err)
	}
	if errors.Is(err, dedupe.ErrAlreadyDone) || errors.Is(err, dedupe.ErrInProgress) {
		t.Fatalf("Claim error %v must not look like a dedupe outcome", err)
	}
	if _, err := s.IsDone(ctx, "k"); err == nil {
		t.Fatal("IsDone succeeded against an unreachable Redis")
	}
}
