// Package budget is the time budget of one callback: how long its
// dependencies may take to answer, and how much longer it may wait when a
// dependency is only busy.
//
// A callback must answer 503 within about a second when Redis or Postgres is
// down or hung, so that Atlassian re-sends it soon; that is the answer budget.
// But a Postgres whose pooled connections are all in use while they keep
// coming back is not down: on a loaded machine the wait for a free connection
// alone could spend the whole answer budget and turn a healthy install into a
// 503, and so could a transaction slowed by a starved CPU. Time spent in such
// a wait is therefore not counted against the answer budget, only against the
// busy budget, a hard bound under AMP's 5 s acknowledgement deadline.
// PauseWhile stops the answer clock only while the dependency keeps making
// progress for someone, so a hung one, which makes none, still ends the
// callback at its answer deadline. Whoever waits decides
// what progress is (package tenant: other transactions committing).
package budget

import (
	"context"
	"sync"
	"time"
)

type key struct{}

// clock is a context whose deadline is the answer deadline, moved later by
// the time spent paused, and never later than the hard (busy) deadline.
type clock struct {
	context.Context // the parent: values and cancellation

	mu       sync.Mutex
	deadline time.Time // the answer deadline while running
	hard     time.Time
	paused   bool
	gen      uint64 // counts pauses, so a resume ends only its own
	pausedAt time.Time
	// progress, while paused, says whether the dependency made
	// progress since its last call; it is asked every step. lastSeen is when
	// it last said so.
	progress func() bool
	step     time.Duration
	lastSeen time.Time
	timer    *time.Timer
	done     chan struct{}
	err      error
	stop     func() bool
}

// New returns a context for one callback: it ends answer after now, later by
// the time spent in PauseWhile, and at the latest busy after now, or when parent
// ends. The cancel function releases it and must be called.
func New(parent context.Context, answer, busy time.Duration) (context.Context, context.CancelFunc) {
	now := time.Now()
	c := &clock{Context: parent, deadline: now.Add(answer), hard: now.Add(max(busy, answer)), done: make(chan struct{})}
	if pd, ok := parent.Deadline(); ok && pd.Before(c.hard) {
		c.hard = pd
		if pd.Before(c.deadline) {
			c.deadline = pd
		}
	}
	// Under the lock: either callback may run at once, and cancel reads both.
	c.mu.Lock()
	c.timer = time.AfterFunc(time.Until(c.deadline), c.expire)
	c.stop = context.AfterFunc(parent, func() { c.cancel(context.Cause(parent)) })
	c.mu.Unlock()
	if parent.Err() != nil {
		c.cancel(context.Cause(parent)) // at once, not when AfterFunc's goroutine runs
	}
	return c, func() { c.cancel(context.Canceled) }
}

// PauseWhile stops the answer clock of ctx's budget until resume is called,
// for as long as the dependency waited on makes progress: the wait counts
// only against the busy budget. Every step it calls progress, which reports whether the dependency
// completed anything since its last call (for Postgres: a transaction of
// another request). When it reports none, the pause lapses and the time since
// the last progress counts against the answer budget after all, so a hung
// dependency, which makes no progress for anyone, still ends the callback at
// its answer deadline (or, for a pause begun less than a step before that
// deadline, up to a step after it). Pauses do not nest: a PauseWhile of a
// budget already paused is a no-op, as is one for a context without a
// budget. resume must be called once.
func PauseWhile(ctx context.Context, step time.Duration, progress func() bool) (resume func()) {
	c, ok := ctx.Value(key{}).(*clock)
	if !ok {
		return func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused || c.err != nil {
		return func() {}
	}
	now := time.Now()
	c.paused, c.pausedAt, c.lastSeen = true, now, now
	c.gen++
	gen := c.gen
	c.progress, c.step = progress, step
	// A whole step before the first look: progress is judged over a window
	// long enough to see some. A pause begun less than a step before the
	// answer deadline can thus end up to a step after it.
	c.timer.Reset(min(step, c.hard.Sub(now)))
	var once sync.Once
	return func() { once.Do(func() { c.resume(gen) }) }
}

// Active reports whether ctx carries a callback budget, that is whether a
// wait on it is bounded by an answer budget PauseWhile can stop.
func Active(ctx context.Context) bool {
	_, ok := ctx.Value(key{}).(*clock)
	return ok
}

func (c *clock) resume(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused || c.gen != gen || c.err != nil { // lapsed, or over
		return
	}
	c.endPause(time.Now())
	c.timer.Reset(time.Until(c.deadline))
}

// endPause moves the answer deadline by the time paused until until, never
// past the hard deadline. c.mu is held.
func (c *clock) endPause(until time.Time) {
	c.paused, c.progress = false, nil
	c.deadline = c.deadline.Add(until.Sub(c.pausedAt))
	if c.deadline.After(c.hard) {
		c.deadline = c.hard
	}
}

// expire runs when the timer fires; a pause or resume may have moved the
// deadline since it was set, so it checks again.
func (c *clock) expire() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if c.paused && now.Before(c.hard) {
		if c.progress() {
			c.lastSeen = now
			c.timer.Reset(min(c.step, c.hard.Sub(now)))
			c.mu.Unlock()
			return
		}
		// No progress for a step: the wait counts from the last progress on.
		c.endPause(c.lastSeen)
	}
	// Still paused here means the hard deadline has passed.
	if !c.paused && now.Before(c.deadline) {
		c.timer.Reset(c.deadline.Sub(now))
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.cancel(context.DeadlineExceeded)
}

func (c *clock) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	c.timer.Stop()
	c.stop()
}

// Deadline is the answer deadline, or the hard one while paused.
func (c *clock) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return c.hard, true
	}
	return c.deadline, true
}

// Done is closed when the budget ends or the parent does.
func (c *clock) Done() <-chan struct{} { return c.done }

// Err is context.DeadlineExceeded when the budget ran out, the parent's
// cause when it ended first, and context.Canceled after cancel.
func (c *clock) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return nil
	}
	if c.err == context.DeadlineExceeded || c.err == context.Canceled {
		return c.err
	}
	return c.Context.Err()
}

// Value finds the budget itself, and the parent's values.
func (c *clock) Value(k any) any {
	if k == (key{}) {
		return c
	}
	return c.Context.Value(k)
}
