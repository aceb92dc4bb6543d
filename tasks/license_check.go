package tasks

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
)

// enqueueLicenseCheck enqueues the license check of one tenant for day (UTC,
// 2006-01-02): the TaskID names both, so a re-run of the day's sweep enqueues
// nothing twice.
func (e *Enqueuer) enqueueLicenseCheck(ctx context.Context, clientKey, day string) (duplicate bool, err error) {
	t, err := newTask(TypeLicenseCheck, TenantPayload{ClientKey: clientKey})
	if err != nil {
		return false, err
	}
	return e.enqueue(ctx, t, asynq.Queue(QueueMaintenance),
		asynq.TaskID("license:"+clientKey+":"+day), asynq.Retention(24*time.Hour), asynq.MaxRetry(5))
}

// licenseCheck records one tenant's current license state.
func (h *Handlers) licenseCheck(ctx context.Context, t *asynq.Task) error {
	p, err := decodeTenant(t)
	if err != nil {
		return err
	}
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	if err := h.d.Lifecycle.RecheckLicense(ctx, p.ClientKey); err != nil {
		return permanent(err)
	}
	return nil
}
