package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

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

// LicenseSweepSchedule is the cron spec of the license sweep.
const LicenseSweepSchedule = "@every 24h"

// licenseSweepPage is how many tenants one sweep reads per query.
const licenseSweepPage = 500

// LicenseSweepTask is the task the scheduler enqueues, with the options that keep
// several worker processes (each running a scheduler) from sweeping twice a day.
func LicenseSweepTask() (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeLicenseSweep, nil),
		[]asynq.Option{asynq.Queue(QueueMaintenance), asynq.Unique(23 * time.Hour), asynq.MaxRetry(5)}
}

// licenseSweep enqueues one license check per installed tenant; the TaskID names
// the tenant and the day, so a re-run of the sweep enqueues nothing twice.
func (w *Worker) licenseSweep(ctx context.Context, _ *asynq.Task) error {
	if w.d.Enqueuer == nil {
		return fmt.Errorf("license sweep needs an enqueuer: %w", asynq.SkipRetry)
	}
	day := w.d.Now().UTC().Format("2006-01-02")
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
// stores the result.
func (w *Worker) recordLicense(ctx context.Context, clientKey string) error {
	checkedAt := w.d.Now()
	info, err := w.d.Product.Addon(ctx, clientKey)
	if err != nil {
		return permanent(fmt.Errorf("license check: %w", err))
	}
	if err := w.d.Tenants.SetLicense(ctx, clientKey, product.LicenseState(info), checkedAt); err != nil {
		return fmt.Errorf("record license of %s: %w", clientKey, err)
	}
	return nil
}
