package tasks

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hibiken/asynq"
)

// Lifecycle enqueues one of the tenant:* tasks (init, enabled) for a history
// event. The TaskID names the type, the tenant and
// the event, so a re-delivered callback that wrote no new history finds its
// task. It reports duplicate=true for such a re-delivery.
func (e *Enqueuer) Lifecycle(ctx context.Context, typ, clientKey string, eventID int64) (duplicate bool, err error) {
	switch typ {
	case TypeTenantInit, TypeTenantEnabled, TypeForgeInit:
	default:
		return false, fmt.Errorf("enqueue: %q is not a lifecycle task type", typ)
	}
	t, err := newTask(typ, TenantPayload{ClientKey: clientKey, EventID: eventID})
	if err != nil {
		return false, err
	}
	id := typ + ":" + clientKey + ":" + strconv.FormatInt(eventID, 10)
	return e.enqueue(ctx, t, asynq.Queue(QueueLifecycle), asynq.TaskID(id),
		asynq.Retention(LifecycleRetention), asynq.MaxRetry(MaxRetry))
}

// decodeTenant reads the payload of a tenant:* task.
func decodeTenant(t *asynq.Task) (TenantPayload, error) {
	return decode(t, func(p *TenantPayload) bool { return p.ClientKey != "" })
}

// tenantEnabled registers the migration webhook and tells the listener.
func (h *Handlers) tenantEnabled(ctx context.Context, t *asynq.Task) error {
	p, err := decodeTenant(t)
	if err != nil {
		return err
	}
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	if err := h.d.Lifecycle.Enabled(ctx, p.ClientKey); err != nil {
		return permanent(err)
	}
	return nil
}
