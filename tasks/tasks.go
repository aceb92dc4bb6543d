// Package tasks is the queue plumbing between the receiver and the worker: the
// asynq task types, declared once below, their payloads and TaskIDs, the
// enqueue side the receiver calls, and the handlers the worker runs, which
// decode a payload and call the domain logic (internal/lifecycle for tenants,
// internal/migration for transfers). Each task type has one file with its
// payload, its enqueue function and its handler.
//
// Payloads carry identifiers only (a clientKey, a history event id, a
// migration event body, which holds no secret): workers read secrets from the
// tenant store. Tasks are enqueued with a deterministic TaskID, so that a
// re-delivered callback, or an enqueue retried after a timeout, is recognised
// by asynq (ErrTaskIDConflict) instead of doing the work twice; see package
// dedupe for the layers of deduplication and what each one covers.
//
// This package is not part of the module's API and may change.
package tasks

import (
	"errors"
	"time"
)

// Task types: every task this service enqueues.
const (
	// TypeTenantInit runs after a verified installed: license check, the
	// vendor's Initializer, migration webhook registration when missing.
	TypeTenantInit = "tenant:init"
	// TypeForgeInit runs after a Forge installed or upgraded: learn the site's
	// URL with the app system token, then the vendor's Initializer.
	TypeForgeInit = "forge:init"
	// TypeTenantEnabled registers the migration webhook.
	TypeTenantEnabled = "tenant:enabled"
	// TypeEventDeliver delivers one event of the event feed to the vendor's
	// listeners (or, with forwarding, to the vendor's backend).
	TypeEventDeliver = "event:deliver"
	// TypeLicenseCheck reads one tenant's license again.
	TypeLicenseCheck = "tenant:license"
	// TypeMigrationEvent processes one App Migration Platform event.
	TypeMigrationEvent = "migration:event"
	// TypeMigrationImport imports one uploaded file of a transfer.
	TypeMigrationImport = "migration:import"
	// TypeMigrationResult records the result the vendor's backend reported for
	// an upload it was handed.
	TypeMigrationResult = "migration:result"
	// TypeLicenseSweep enqueues a TypeLicenseCheck for every installed tenant,
	// once a day: a subscription can end without any lifecycle event.
	TypeLicenseSweep = "maintenance:license-sweep"
	// TypeSettleSweep repairs transfers nothing else would finish: settle calls
	// still owed, imports whose task was lost, completions never confirmed.
	TypeSettleSweep = "maintenance:settle-sweep"
)

// Queue names, in strict priority order: lifecycle work (what a customer waits
// for after an install), then the delivery of events to the vendor, then
// migration work, then maintenance. Lifecycle
// tasks are few and short, so putting them first never starves migrations for
// long, while a backlog of gigabyte imports never delays a new tenant's
// initialization.
const (
	QueueLifecycle   = "lifecycle"
	QueueEvents      = "events"
	QueueMigration   = "migration"
	QueueMaintenance = "maintenance"
)

// Queues are the worker's queues and their priorities (the worker runs them with
// asynq's StrictPriority, so a higher number always goes first).
var Queues = map[string]int{QueueLifecycle: 6, QueueEvents: 5, QueueMigration: 3, QueueMaintenance: 1}

// Retention windows: how long a completed task (and so its TaskID) is kept, which
// is how long a re-delivery is recognised at enqueue time.
const (
	// LifecycleRetention covers Atlassian's re-sends of a lifecycle callback.
	LifecycleRetention = 24 * time.Hour
	// MigrationRetention is the App Migration Platform's transfer window: events
	// for a transfer are only accepted for 14 days after its first notification.
	MigrationRetention = 14 * 24 * time.Hour
)

// MaxRetry is how many times a failing task is retried before asynq archives it:
// with RetryDelay (2 s doubling, capped at 1 h, jittered to 50-100 %) that spans
// about two days, longer than any product outage we should wait out. Operators
// re-run archived tasks from the monitoring UI.
const MaxRetry = 72

// ErrUnavailable is wrapped by enqueue errors that are not asynq's "already have
// it" answers: Redis could not be reached or answered an error. The receiver
// answers 503 so that Atlassian re-sends.
var ErrUnavailable = errors.New("task queue unavailable")

// TenantPayload is the payload of the tenant:* tasks.
type TenantPayload struct {
	// ClientKey is the tenant.
	ClientKey string `json:"clientKey"`
	// EventID is the tenant history row that caused the task (0 for a license
	// check, which no lifecycle event caused).
	EventID int64 `json:"eventId"`
}
