package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/product"
)

// Maintenance task types.
const (
	// TypeLicenseSweep enqueues a TypeLicenseCheck for every installed tenant. It
	// is scheduled daily: installed is not licensed, a subscription can end
	// without any lifecycle event, so license state is tracked on its own.
	TypeLicenseSweep = "maintenance:license-sweep"
	// TypeLicenseCheck re-reads one tenant's license from the License REST API.
	TypeLicenseCheck = "tenant:license"
)

// LicenseSweepSchedule is the cron spec (UTC) of the license sweep: a fixed time
// of day, because "@every 24h" counts from each scheduler's start and would never
// fire on workers restarted more often than daily.
const LicenseSweepSchedule = "17 3 * * *"

// licenseSweepPage is how many tenants one sweep reads per query.
const licenseSweepPage = 500

// LicenseSweepTask is the task the scheduler enqueues. Every worker process runs
// a scheduler, so several sweeps may be enqueued for one day; Unique collapses
// the ones enqueued together and the sweep's per-day claim (see licenseSweep)
// makes the others do nothing.
func LicenseSweepTask() (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeLicenseSweep, nil),
		[]asynq.Option{asynq.Queue(QueueMaintenance), asynq.Unique(time.Hour), asynq.MaxRetry(5)}
}

// licenseSweep enqueues one license check per installed tenant; the TaskID names
// the tenant and the day, so a re-run of the sweep enqueues nothing twice.
func (w *Worker) licenseSweep(ctx context.Context, _ *asynq.Task) (err error) {
	if w.d.Enqueuer == nil {
		return fmt.Errorf("license sweep needs an enqueuer: %w", asynq.SkipRetry)
	}
	day := w.d.Now().UTC().Format("2006-01-02")
	if d := w.d.Migration.Dedupe; d != nil {
		claim, err := d.Claim(ctx, "license-sweep:"+day)
		switch {
		case errors.Is(err, dedupe.ErrAlreadyDone), errors.Is(err, dedupe.ErrInProgress):
			w.d.Logger.InfoContext(ctx, "license sweep already done or running today", slog.String("day", day))
			return nil
		case err != nil:
			return fmt.Errorf("license sweep: claim %s: %w", day, err)
		}
		defer func() {
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
	for offset := 0; ; offset += licenseSweepPage {
		page, err := w.d.Tenants.List(ctx, licenseSweepPage, offset)
		if err != nil {
			return fmt.Errorf("license sweep: list tenants: %w", err)
		}
		for _, tn := range page {
			if !tn.Installed {
				continue
			}
			b, _ := json.Marshal(LifecyclePayload{ClientKey: tn.ClientKey})
			t := asynq.NewTask(TypeLicenseCheck, b)
			dup, err := w.d.Enqueuer.enqueue(ctx, t, asynq.Queue(QueueMaintenance),
				asynq.TaskID("license:"+tn.ClientKey+":"+day), asynq.Retention(24*time.Hour), asynq.MaxRetry(5))
			if err != nil {
				return fmt.Errorf("license sweep: %w", err)
			}
			if !dup {
				enqueued++
			}
		}
		if len(page) < licenseSweepPage {
			break
		}
	}
	w.d.Logger.InfoContext(ctx, "license sweep enqueued checks", slog.Int("tenants", enqueued))
	return nil
}

// licenseCheck records one tenant's current license state.
func (w *Worker) licenseCheck(ctx context.Context, t *asynq.Task) error {
	tn, ok, err := w.installedTenant(ctx, t)
	if !ok {
		return err
	}
	return w.recordLicense(ctx, tn.ClientKey)
}

// recordLicense asks the product for the app's license on the tenant's site and
// stores the result. A 401 ends the task (no other call with this secret can
// work either); other final answers (403, 404, 400) are logged and the stored
// state left as it was, so that reading license information never blocks a
// tenant's initialization. Transient failures are returned for a retry.
func (w *Worker) recordLicense(ctx context.Context, clientKey string) error {
	checkedAt := w.d.Now()
	info, err := w.d.Product.Addon(ctx, clientKey)
	if err != nil {
		err = permanent(fmt.Errorf("license check: %w", err))
		if errors.Is(err, asynq.SkipRetry) && !errors.Is(err, product.ErrUnauthorized) {
			w.d.Logger.WarnContext(ctx, "license state not readable; left unchanged",
				slog.String("client_key", clientKey), slog.String("error", err.Error()))
			return nil
		}
		return err
	}
	if err := w.d.Tenants.SetLicense(ctx, clientKey, product.LicenseState(info), checkedAt); err != nil {
		return fmt.Errorf("record license of %s: %w", clientKey, err)
	}
	return nil
}
