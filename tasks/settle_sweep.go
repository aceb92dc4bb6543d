package tasks

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/migration"
)

// SettleSweepSchedule is how often the settle sweep runs.
const SettleSweepSchedule = "@every 5m"

// EventRetention is how long a delivered event stays in the feed (for operators)
// before the settle sweep deletes it.
const EventRetention = 7 * 24 * time.Hour

// StaleImportAfter is how long an upload may stay queued (or importing under an
// expired lease) before the sweep schedules it again: longer than a retry's
// backoff (capped at an hour) plus a migration queue backlog, short enough that a
// lost task does not stall a transfer for long.
const StaleImportAfter = 3 * time.Hour

// SettleSweepTask is the scheduled settle sweep, unique across workers and
// bounded so that one slow run does not overlap the next.
func SettleSweepTask() (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeSettleSweep, nil),
		[]asynq.Option{asynq.Queue(QueueMaintenance), asynq.Unique(4 * time.Minute), asynq.MaxRetry(0), asynq.Timeout(4 * time.Minute)}
}

// settleSweep reschedules imports whose task went missing, checks again the
// completion of transfers never confirmed, makes the settle calls still owed,
// and prunes migration events past their retention and delivered feed events.
// Each step has a budget of its own, so a backlog of slow settle calls cannot
// starve the others.
func (h *Handlers) settleSweep(ctx context.Context, _ *asynq.Task) error {
	m := h.d.Migration
	if m == nil {
		return nil
	}
	step := func(d time.Duration, f func(context.Context) (int, error)) (int, error) {
		sctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return f(sctx)
	}
	r, rerr := step(time.Minute, func(c context.Context) (int, error) { return m.RequeueStale(c, StaleImportAfter, 200) })
	if r > 0 {
		h.d.Logger.WarnContext(ctx, "imports rescheduled after their tasks went missing or were archived", slog.Int("uploads", r))
	}
	c, cerr := step(time.Minute, func(c context.Context) (int, error) {
		return m.ReconcileStale(c, migration.DefaultReconcileAfter, migration.DefaultGiveUpAfter, 100)
	})
	if c > 0 {
		h.d.Logger.InfoContext(ctx, "open transfers reconciled", slog.Int("transfers", c), slog.Bool("ok", cerr == nil))
	}
	n, err := step(90*time.Second, func(c context.Context) (int, error) { return m.SettlePending(c, 200) })
	if n > 0 {
		h.d.Logger.InfoContext(ctx, "settle sweep", slog.Int("attempted", n), slog.Bool("all_settled", err == nil))
	}
	_, merr := step(30*time.Second, func(c context.Context) (int, error) {
		n, err := m.PruneEvents(c, migration.DefaultEventRetention, 5000)
		return int(n), err
	})
	var perr error
	if h.d.Events != nil {
		_, perr = step(30*time.Second, func(c context.Context) (int, error) {
			n, err := h.d.Events.Prune(c, EventRetention, 5000)
			return int(n), err
		})
	}
	return errors.Join(rerr, cerr, err, merr, perr)
}
