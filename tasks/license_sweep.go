package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/dedupe"
)

// LicenseSweepSchedule is the cron spec (UTC) of the license sweep: a fixed time
// of day, because "@every 24h" counts from each scheduler's start and would never
// fire on workers restarted more often than daily.
const LicenseSweepSchedule = "17 3 * * *"

// LicenseSweepTask is the task the scheduler enqueues. Every worker process runs
// a scheduler, so several sweeps may be enqueued for one day; Unique collapses
// the ones enqueued together and the sweep's per-day claim makes the others do
// nothing.
func LicenseSweepTask() (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeLicenseSweep, nil),
		[]asynq.Option{asynq.Queue(QueueMaintenance), asynq.Unique(time.Hour), asynq.MaxRetry(5)}
}

// licenseSweep enqueues one license check per installed tenant, once per day
// (UTC) across all workers.
func (h *Handlers) licenseSweep(ctx context.Context, t *asynq.Task) (err error) {
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	day := h.d.Now().UTC().Format("2006-01-02")
	if c := h.d.SweepClaims; c != nil {
		claim, err := c.Claim(ctx, day)
		switch {
		case errors.Is(err, dedupe.ErrAlreadyDone), errors.Is(err, dedupe.ErrInProgress):
			h.d.Logger.InfoContext(ctx, "license sweep already done or running today", slog.String("day", day))
			return nil
		case err != nil:
			return fmt.Errorf("license sweep of %s: %w", day, err)
		}
		// A sweep of many tenants outlasts the short claim: keep it.
		stop := claim.KeepAlive(ctx, nil)
		defer func() {
			stop()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err == nil {
				_ = claim.Done(dctx)
			} else {
				_ = claim.Release(dctx)
			}
		}()
	}
	enqueued := 0
	for clientKey, err := range h.d.Lifecycle.InstalledTenants(ctx) {
		if err != nil {
			return fmt.Errorf("license sweep of %s: %w", day, err)
		}
		dup, err := h.d.Enqueuer.enqueueLicenseCheck(ctx, clientKey, day)
		if err != nil {
			return fmt.Errorf("license sweep of %s: %w", day, err)
		}
		if !dup {
			enqueued++
		}
	}
	h.d.Logger.InfoContext(ctx, "license sweep enqueued checks", slog.Int("tenants", enqueued))
	return nil
}
