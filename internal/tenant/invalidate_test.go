package tenant

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// replica is one receiver's secret cache and HS256 verifier.
type replica struct {
	cache    *SecretCache
	inv      *Invalidations
	verifier *connect.HS256Verifier
}

const replicaApp = "https://app.example"

func newReplica(t *testing.T, b *testBundle, rdb *redis.Client, channel string) *replica {
	t.Helper()
	// A TTL far beyond the test: only an invalidation can retire a secret.
	cache := NewSecretCache(b.store, time.Hour)
	inv := NewInvalidations(cache, rdb, channel, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	if err := inv.Start(ctx); err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { cancel(); <-inv.Done() })
	v, err := connect.NewHS256Verifier(connect.HS256Config{AppBaseURLs: []string{replicaApp}, Secrets: cache})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{cache: cache, inv: inv, verifier: v}
}

// verify reports whether r accepts an enabled signed with secret.
func (r *replica) verify(t *testing.T, atl *atlassiantest.Atlassian, secret string) error {
	t.Helper()
	req := atl.Request(t, replicaApp, "/enabled", map[string]any{"clientKey": "ck"},
		atlassiantest.Token{Alg: "HS256", Issuer: "ck", Secret: []byte(secret)})
	_, err := r.verifier.Verify(testCtx(t), req, connect.QSHComputed)
	return err
}

// Two replicas on one Redis: after an install through A, B refuses the old
// secret within a bounded time, well inside its cache TTL.
func TestInvalidations_ReplicaRefusesTheRotatedSecretSoon(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), DB: db})
	t.Cleanup(func() { _ = rdb.Close() })
	channel := InvalidationChannel(db, "test-"+t.Name())
	a, bb := newReplica(t, b, rdb, channel), newReplica(t, b, rdb, channel)
	atl := atlassiantest.New(t)

	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "old-secret"}), ts(1), ts(1))
	for name, r := range map[string]*replica{"A": a, "B": bb} {
		if err := r.verify(t, atl, "old-secret"); err != nil {
			t.Fatalf("replica %s refuses the current secret: %v", name, err)
		}
	}

	// The install through A: stored, committed, then announced.
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "new-secret"}), ts(2), ts(2))
	if err := a.inv.Invalidate(testCtx(t), "ck"); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := bb.verify(t, atl, "old-secret")
		if connect.StatusCode(err) == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica B still accepts the old secret 2 s after the install (err %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, r := range map[string]*replica{"A": a, "B": bb} {
		if err := r.verify(t, atl, "new-secret"); err != nil {
			t.Errorf("replica %s refuses the new secret: %v", name, err)
		}
		if err := r.verify(t, atl, "old-secret"); connect.StatusCode(err) != http.StatusUnauthorized {
			t.Errorf("replica %s: old secret gives %v, want 401", name, err)
		}
	}
}

func TestInvalidations_RedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.ClosedAddr(t), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	inv := NewInvalidations(NewSecretCache(b.store, time.Minute), rdb, InvalidationChannel(0, "x"), testLogger(t))
	if err := inv.Invalidate(testCtx(t), "ck"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Invalidate with Redis down: %v, want ErrUnavailable", err)
	}
	if err := inv.Start(testCtx(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start with Redis down: %v, want ErrUnavailable", err)
	}
}
