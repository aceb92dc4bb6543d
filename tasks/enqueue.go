package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
)

// Enqueuer puts tasks on the queue. It is safe for concurrent use.
type Enqueuer struct {
	client *asynq.Client
}

// NewEnqueuer wraps an asynq client (build it with asynq.NewClientFromRedisClient
// on the process's shared Redis client, so its timeouts are the ones set there).
func NewEnqueuer(client *asynq.Client) *Enqueuer {
	return &Enqueuer{client: client}
}

// newTask encodes payload as the JSON payload of a task of type typ.
func newTask(typ string, payload any) (*asynq.Task, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b), nil
}

// enqueue puts t on the queue. It reports duplicate=true when a task with the
// same TaskID (or uniqueness lock) exists: the work is already queued or done.
// Any other failure wraps ErrUnavailable.
func (e *Enqueuer) enqueue(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (duplicate bool, err error) {
	_, err = e.client.EnqueueContext(ctx, t, opts...)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
		return true, nil
	default:
		// asynq flattens Redis errors into strings, so any other error is
		// treated as "queue unavailable".
		return false, fmt.Errorf("%w: enqueue %s: %w", ErrUnavailable, t.Type(), err)
	}
}
