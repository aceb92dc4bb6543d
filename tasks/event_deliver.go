package tasks

import (
	"context"
	"strconv"

	"github.com/hibiken/asynq"
)

// eventPayload is the payload of event:deliver.
type eventPayload struct {
	// ID is the event's id in the feed.
	ID int64 `json:"id"`
}

// EnqueueEvent enqueues the delivery of event id of the feed. The TaskID is the
// event's, so the dispatcher handing an event over twice enqueues one task.
func (e *Enqueuer) EnqueueEvent(ctx context.Context, id int64) error {
	t, err := newTask(TypeEventDeliver, eventPayload{ID: id})
	if err != nil {
		return err
	}
	_, err = e.enqueue(ctx, t, asynq.Queue(QueueEvents), asynq.TaskID("event:"+strconv.FormatInt(id, 10)),
		asynq.Retention(LifecycleRetention), asynq.MaxRetry(MaxRetry))
	return err
}

// eventDeliver delivers one event to the vendor's listeners; an error retries it.
func (h *Handlers) eventDeliver(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t, func(p *eventPayload) bool { return p.ID > 0 })
	if err != nil {
		return err
	}
	if h.d.Lifecycle == nil {
		return notConfigured(t)
	}
	return permanent(h.d.Lifecycle.Deliver(ctx, p.ID))
}
