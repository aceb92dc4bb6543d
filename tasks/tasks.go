// Package tasks holds the asynq task types, their payloads, the enqueue side used by
// the receiver and the handlers run by the worker.
//
// Payloads carry identifiers only (a clientKey, a history event id, a migration
// event body, which holds no secret): workers read secrets from the tenant store.
// Every task is enqueued with a deterministic TaskID, so a re-delivered callback or
// a retried enqueue after a timeout is recognised by asynq (ErrTaskIDConflict) instead
// of doing the work twice.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// Task types.
const (
	// TypeTenantInit runs after a verified installed: license check, vendor
	// initialization hook, migration webhook registration when missing.
	TypeTenantInit = "tenant:init"
	// TypeTenantUninstalled runs the vendor's uninstall hook; it never deletes data.
	TypeTenantUninstalled = "tenant:uninstalled"
	// TypeTenantEnabled registers the migration webhook and runs the vendor's
	// enabled hook.
	TypeTenantEnabled = "tenant:enabled"
	// TypeTenantDisabled runs the vendor's disabled hook.
	TypeTenantDisabled = "tenant:disabled"
	// TypeMigrationEvent processes one App Migration Platform event.
	TypeMigrationEvent = "migration:event"
	// TypeMigrationImport imports one uploaded file of a transfer.
	TypeMigrationImport = "migration:import"
)

// Queue names, in strict priority order: lifecycle work (what a customer waits
// for after an install) before migration work before maintenance. Lifecycle tasks
// are few and short, so putting them first never starves migrations for long,
// while a backlog of gigabyte imports never delays a new tenant's initialization.
const (
	QueueLifecycle   = "lifecycle"
	QueueMigration   = "migration"
	QueueMaintenance = "maintenance"
)

// Queues are the worker's queues and their priorities (the worker runs them with
// asynq's StrictPriority, so a higher number always goes first).
var Queues = map[string]int{QueueLifecycle: 6, QueueMigration: 3, QueueMaintenance: 1}

// Retention windows: how long a completed task (and so its TaskID) is kept, which
// is how long a re-delivery is recognised at enqueue time.
const (
	// LifecycleRetention covers Atlassian's re-sends of a lifecycle callback.
	LifecycleRetention = 24 * time.Hour
	// MigrationRetention is AMP's transfer window: events for a transfer are only
	// accepted for 14 days after its first notification.
	MigrationRetention = 14 * 24 * time.Hour
)

// ErrUnavailable is wrapped by enqueue errors that are not asynq's "already have
// it" sentinels: Redis could not be reached or answered an error. The receiver
// answers 503 so Atlassian re-sends.
var ErrUnavailable = errors.New("task queue unavailable")

// LifecyclePayload is the payload of the tenant:* tasks.
type LifecyclePayload struct {
	// ClientKey is the tenant.
	ClientKey string `json:"clientKey"`
	// EventID is the tenant history row that caused the task (0 when the event
	// concerned an unknown tenant and wrote no history).
	EventID int64 `json:"eventId"`
}

// MigrationEventPayload is the payload of migration:event.
type MigrationEventPayload struct {
	// ClientKey is the tenant whose JWT authenticated the event.
	ClientKey string `json:"clientKey"`
	// Event is the event body as received; AMP events carry no secret.
	Event json.RawMessage `json:"event"`
}

// ImportPayload is the payload of migration:import.
type ImportPayload struct {
	// ClientKey is the tenant.
	ClientKey string `json:"clientKey"`
	// TransferID is the AMP transfer.
	TransferID string `json:"transferId"`
	// S3Key identifies the uploaded file.
	S3Key string `json:"s3Key"`
	// Label is the app's label for the upload.
	Label string `json:"label,omitempty"`
}

func newTask(typ string, payload any) (*asynq.Task, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b), nil
}

func lifecycleTaskID(typ, clientKey string, eventID int64) string {
	return typ + ":" + clientKey + ":" + strconv.FormatInt(eventID, 10)
}

// Enqueuer puts tasks on the queue. It is safe for concurrent use.
type Enqueuer struct {
	client *asynq.Client
}

// NewEnqueuer wraps an asynq client (build it with asynq.NewClientFromRedisClient
// on the process's shared Redis client, so timeouts are the ones set there).
func NewEnqueuer(client *asynq.Client) *Enqueuer {
	return &Enqueuer{client: client}
}

// Lifecycle enqueues one of the tenant:* tasks for a history event. It reports
// duplicate=true when the same task was already enqueued (a re-delivery).
func (e *Enqueuer) Lifecycle(ctx context.Context, typ, clientKey string, eventID int64) (duplicate bool, err error) {
	switch typ {
	case TypeTenantInit, TypeTenantUninstalled, TypeTenantEnabled, TypeTenantDisabled:
	default:
		return false, fmt.Errorf("enqueue: %q is not a lifecycle task type", typ)
	}
	t, err := newTask(typ, LifecyclePayload{ClientKey: clientKey, EventID: eventID})
	if err != nil {
		return false, err
	}
	return e.enqueue(ctx, t, asynq.Queue(QueueLifecycle), asynq.TaskID(lifecycleTaskID(typ, clientKey, eventID)),
		asynq.Retention(LifecycleRetention), asynq.MaxRetry(MaxRetry))
}

// MigrationEvent enqueues a migration event under the signing tenant and its
// dedupe key (messageId, or a key derived from the event's content), so a re-sent
// event is a duplicate.
func (e *Enqueuer) MigrationEvent(ctx context.Context, clientKey, dedupeKey string, body json.RawMessage) (duplicate bool, err error) {
	t, err := newTask(TypeMigrationEvent, MigrationEventPayload{ClientKey: clientKey, Event: body})
	if err != nil {
		return false, err
	}
	// The tenant is part of the TaskID: another tenant that learns a messageId
	// must not be able to pre-empt this tenant's event with its own.
	return e.enqueue(ctx, t, asynq.Queue(QueueMigration), asynq.TaskID("amp:"+clientKey+":"+dedupeKey),
		asynq.Retention(MigrationRetention), asynq.MaxRetry(MaxRetry))
}

// Import enqueues the import of one upload; the TaskID is the (transfer, s3Key)
// pair so scheduling it twice is harmless. reschedule, when non-zero, is added to
// the TaskID: an upload whose task was archived or lost is scheduled again under
// a new ID, since the old one stays taken for the retention window.
func (e *Enqueuer) Import(ctx context.Context, p ImportPayload, reschedule int) (duplicate bool, err error) {
	t, err := newTask(TypeMigrationImport, p)
	if err != nil {
		return false, err
	}
	id := "import:" + p.TransferID + ":" + p.S3Key
	if reschedule != 0 {
		id += ":r" + strconv.Itoa(reschedule)
	}
	return e.enqueue(ctx, t, asynq.Queue(QueueMigration), asynq.TaskID(id),
		asynq.Retention(MigrationRetention), asynq.MaxRetry(MaxRetry), asynq.Timeout(ImportTimeout))
}

func (e *Enqueuer) enqueue(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (bool, error) {
	_, err := e.client.EnqueueContext(ctx, t, opts...)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
		return true, nil
	default:
		// asynq flattens Redis errors into strings after the first call (see
		// STACK-NOTES), so any other error is treated as "queue unavailable".
		return false, fmt.Errorf("%w: enqueue %s: %w", ErrUnavailable, t.Type(), err)
	}
}

// MaxRetry is how many times a failing task is retried before asynq archives it:
// with RetryDelay (2 s doubling, capped at 1 h, jittered to 50-100 %) that spans
// about two days, longer than any product outage we should wait out. Operators
// re-run archived tasks from the monitoring UI.
const MaxRetry = 72

// ImportTimeout bounds one import attempt. asynq's default (30 min) would cancel
// a multi-gigabyte download mid-stream on every attempt; a stalled download is
// caught much sooner by the AMP client's stall watchdog.
const ImportTimeout = 12 * time.Hour
