package tenant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/budget"
	"github.com/connectrelay/connectrelay/internal/schema"
)

// smallPoolStore is a Store over a pool of two connections on b's database,
// with n installed tenants ck-0..ck-n-1.
func smallPoolStore(t *testing.T, b *testBundle, n int) (*Store, *pgxpool.Pool) {
	t.Helper()
	for i := range n {
		b.install(t, payload(t, fmt.Sprintf("ck-%d", i), nil), ts(1), ts(1))
	}
	pool, err := schema.Open(testCtx(t), b.url+"&pool_max_conns=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return NewStore(pool, b.box, testLogger(t)), pool
}

// holdPool takes every connection of pool and gives them back after d.
func holdPool(t *testing.T, pool *pgxpool.Pool, d time.Duration) {
	t.Helper()
	var conns []*pgxpool.Conn
	for range int(pool.Config().MaxConns) {
		c, err := pool.Acquire(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.AfterFunc(d, func() {
		for _, c := range conns {
			c.Release()
		}
	})
}

func TestSetEnabled_WaitingForABusyPoolIsNotCountedAgainstTheAnswerBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 12
	store, pool := smallPoolStore(t, b, n)

	run := func(newCtx func() (context.Context, context.CancelFunc)) []error {
		// Every connection is taken for three answer budgets, then handed out
		// again: busy, not down.
		holdPool(t, pool, 150*time.Millisecond)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				ctx, cancel := newCtx()
				defer cancel()
				_, errs[i] = store.SetEnabled(ctx, fmt.Sprintf("ck-%d", i), true, ReceivedAt(ts(10+i), ts(10)))
			})
		}
		wg.Wait()
		return errs
	}
	const answer = 50 * time.Millisecond
	for i, err := range run(func() (context.Context, context.CancelFunc) {
		return budget.New(testCtx(t), answer, 5*time.Second)
	}) {
		if err != nil {
			t.Errorf("SetEnabled(ck-%d) with a busy pool = %v, want nil", i, err)
		}
	}
	// The same wait under a plain deadline of the answer budget fails: the
	// test above would catch a wait that counted.
	failed := 0
	for _, err := range run(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(testCtx(t), answer)
	}) {
		if errors.Is(err, ErrUnavailable) {
			failed++
		}
	}
	if failed == 0 {
		t.Error("with a plain 50 ms deadline no call failed: the pool was not held")
	}
}

func TestSetEnabled_APoolThatHandsOutNothingIsDownAndFailsFast(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store, pool := smallPoolStore(t, b, 1)
	holdPool(t, pool, 3*time.Second) // as if every connection hung in a statement

	ctx, cancel := budget.New(testCtx(t), 950*time.Millisecond, 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := store.SetEnabled(ctx, "ck-0", true, ReceivedAt(ts(10), ts(10)))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetEnabled with no connection coming back = %v, want ErrUnavailable", err)
	}
	// Three stall timeouts (a baseline, then two without a hand-out), or the
	// answer budget, whichever ends first: within the second of the contract.
	if d := time.Since(start); d > time.Second {
		t.Errorf("gave up after %v, want within 1 s (three stall timeouts of %v)", d, StallTimeout)
	}
}

func TestSetEnabled_ASlowTransactionWhileOthersCommitIsBusyNotDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store, _ := smallPoolStore(t, b, 3)
	const answer = 100 * time.Millisecond

	// lockFor holds ck-0's row lock (as a slow statement would hold it up) for d.
	lockFor := func(d time.Duration) {
		tx, err := b.pool.Begin(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(testCtx(t), `SELECT 1 FROM tenants WHERE client_key = 'ck-0' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(d, func() { _ = tx.Rollback(context.Background()) })
	}
	enable := func(i int) error {
		ctx, cancel := budget.New(testCtx(t), answer, 5*time.Second)
		defer cancel()
		_, err := store.SetEnabled(ctx, "ck-0", i%2 == 0, ReceivedAt(ts(10+i), ts(10+i)))
		return err
	}

	// Other callbacks keep committing meanwhile: Postgres is busy, not down.
	lockFor(400 * time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			_, _ = store.SetEnabled(testCtx(t), fmt.Sprintf("ck-%d", 1+i%2), i%2 == 0, ReceivedAt(ts(100+i), ts(100+i)))
		}
	})
	err := enable(0)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("SetEnabled waiting 400 ms on a lock while others commit = %v, want nil", err)
	}

	// The same wait with nothing else committing is what a hung Postgres
	// looks like: it ends at the answer budget.
	lockFor(400 * time.Millisecond)
	start := time.Now()
	if err := enable(2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetEnabled waiting on a lock with no progress = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 350*time.Millisecond {
		t.Errorf("gave up after %v, want about the answer budget (%v)", d, answer)
	}
}
