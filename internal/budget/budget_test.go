package budget

import (
	"context"
	"errors"
	"testing"
	"time"
)

// alwaysBusy is the progress of a dependency that keeps making progress.
func alwaysBusy() bool { return true }

// mustEnd fails the test unless ctx ends within d.
func mustEnd(t *testing.T, ctx context.Context, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(d):
		t.Fatal(what)
	}
}

func TestNew_EndsAtTheAnswerDeadlineWhenNothingPauses(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx, cancel := New(context.Background(), 50*time.Millisecond, time.Second)
	defer cancel()
	if dl, ok := ctx.Deadline(); !ok || dl.Sub(start) > 60*time.Millisecond {
		t.Errorf("Deadline() = %v, %v; want about 50 ms from now", dl.Sub(start), ok)
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err() = %v, want DeadlineExceeded", ctx.Err())
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("ended after %v, want about 50 ms", d)
	}
}

func TestPauseWhile_TimeSpentBusyIsNotCountedAgainstTheAnswerBudget(t *testing.T) {
	t.Parallel()
	ctx, cancel := New(context.Background(), 100*time.Millisecond, 5*time.Second)
	defer cancel()
	resume := PauseWhile(ctx, 10*time.Millisecond, alwaysBusy)
	if dl, _ := ctx.Deadline(); time.Until(dl) < 4*time.Second {
		t.Errorf("paused Deadline() in %v, want the busy deadline (about 5 s)", time.Until(dl))
	}
	time.Sleep(300 * time.Millisecond) // three answer budgets
	if ctx.Err() != nil {
		t.Fatalf("Err() = %v while paused, want nil", ctx.Err())
	}
	resume()
	resume() // a second call is a no-op
	dl, _ := ctx.Deadline()
	if left := time.Until(dl); left < 20*time.Millisecond || left > 110*time.Millisecond {
		t.Errorf("after resume %v left, want the unspent answer budget (about 100 ms)", left)
	}
	mustEnd(t, ctx, 2*time.Second, "not ended after the answer budget resumed")
}

func TestPauseWhile_IsBoundedByTheBusyBudget(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx, cancel := New(context.Background(), 20*time.Millisecond, 150*time.Millisecond)
	defer cancel()
	resume := PauseWhile(ctx, 10*time.Millisecond, alwaysBusy)
	defer resume()
	<-ctx.Done()
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("paused budget ended after %v, want the busy budget (150 ms)", d)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err() = %v, want DeadlineExceeded", ctx.Err())
	}
}

func TestNew_EndsWithItsParentAndKeepsItsValues(t *testing.T) {
	t.Parallel()
	type k struct{}
	parent, stop := context.WithCancel(context.WithValue(context.Background(), k{}, "v"))
	ctx, cancel := New(parent, time.Minute, time.Minute)
	defer cancel()
	if ctx.Value(k{}) != "v" || !Active(ctx) || Active(parent) {
		t.Fatal("values: want the parent's and the budget's own")
	}
	child, cancelChild := context.WithTimeout(ctx, time.Minute)
	defer cancelChild()
	stop()
	mustEnd(t, child, time.Second, "a child of the budget did not end with the parent")
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err() = %v, want Canceled", ctx.Err())
	}
}

func TestNew_NeverOutlivesTheParentsDeadline(t *testing.T) {
	t.Parallel()
	parent, stop := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer stop()
	ctx, cancel := New(parent, time.Second, 5*time.Second)
	defer cancel()
	resume := PauseWhile(ctx, 10*time.Millisecond, alwaysBusy)
	defer resume()
	if dl, _ := ctx.Deadline(); time.Until(dl) > 40*time.Millisecond {
		t.Errorf("Deadline() in %v, want the parent's (30 ms)", time.Until(dl))
	}
	mustEnd(t, ctx, time.Second, "did not end with the parent's deadline")
}

func TestPauseWhile_WithoutABudgetDoesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	PauseWhile(ctx, time.Millisecond, alwaysBusy)()
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}
}

func TestPauseWhile_NoProgressEndsAtTheAnswerDeadline(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx, cancel := New(context.Background(), 100*time.Millisecond, 5*time.Second)
	defer cancel()
	resume := PauseWhile(ctx, 20*time.Millisecond, func() bool { return false })
	defer resume()
	mustEnd(t, ctx, 2*time.Second, "a hung dependency kept the budget open")
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("ended after %v, want the answer budget (100 ms): no wait counted as busy", d)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err() = %v, want DeadlineExceeded", ctx.Err())
	}
}

func TestPauseWhile_ProgressThatStopsCountsOnlyUntilItStopped(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx, cancel := New(context.Background(), 100*time.Millisecond, 5*time.Second)
	defer cancel()
	busyUntil := start.Add(300 * time.Millisecond)
	resume := PauseWhile(ctx, 20*time.Millisecond, func() bool { return time.Now().Before(busyUntil) })
	defer resume()
	<-ctx.Done()
	// About 300 ms of busy wait that did not count, then the 100 ms budget.
	if d := time.Since(start); d < 330*time.Millisecond || d > time.Second {
		t.Errorf("ended after %v, want about 400 ms", d)
	}
}

func TestPauseWhile_ALapsedPauseDoesNotEndALaterOne(t *testing.T) {
	t.Parallel()
	ctx, cancel := New(context.Background(), 80*time.Millisecond, 5*time.Second)
	defer cancel()
	stale := PauseWhile(ctx, 10*time.Millisecond, func() bool { return false })
	time.Sleep(30 * time.Millisecond) // lapsed: no progress
	later := PauseWhile(ctx, 10*time.Millisecond, alwaysBusy)
	inner := PauseWhile(ctx, 10*time.Millisecond, alwaysBusy) // already paused: a no-op
	inner()
	stale() // the lapsed pause's resume must not end the later pause
	time.Sleep(150 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("Err() = %v: a resume ended a pause that was not its own", ctx.Err())
	}
	later()
	mustEnd(t, ctx, 2*time.Second, "not ended after the later pause resumed")
}

func TestNew_WithAParentAlreadyDoneIsDoneAtOnce(t *testing.T) {
	t.Parallel()
	parent, stop := context.WithCancel(context.Background())
	stop()
	ctx, cancel := New(parent, time.Minute, time.Minute)
	defer cancel()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err() = %v right after New, want Canceled", ctx.Err())
	}
}
