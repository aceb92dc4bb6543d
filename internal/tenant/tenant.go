// Package tenant keeps the Atlassian Connect tenants of the app: one per clientKey,
// with the shared secret encrypted at rest, a history of every lifecycle event, and the
// links between tenants that share a baseUrl after a site import.
//
// What it is built against (docs/protocol.md#lifecycle-payloads):
//   - installed arrives many times; it is an idempotent upsert keyed by clientKey that
//     saves everything it carries (new secret, new baseUrl, versions).
//   - baseUrl is not a key: it changes on rename, and a site import sends a NEW
//     clientKey with an existing baseUrl. That is a new tenant; the old one is kept as
//     it is and the link is recorded for an operator.
//   - disabled and uninstalled may be processed concurrently and in either order; row
//     locks plus the JWT iat order keep the tenant consistent.
//   - installed != licensed, and a missed uninstalled is possible: nothing is ever
//     deleted here.
//
// Errors callers branch on are the sentinels ErrNotFound (404/ignore), ErrUnavailable
// (Postgres unreachable or transiently failing: answer 503 so Atlassian re-sends) and
// ErrInvalidPayload (400).
package tenant

import (
	"errors"
	"time"

	"github.com/connectrelay/connectrelay"
)

// ErrNotFound means no tenant has the clientKey.
var ErrNotFound = errors.New("tenant not found")

// ErrUnavailable means the store could not answer now: Postgres is unreachable, timed
// out, is shutting down, or hit a transient conflict. Retrying later can succeed, so
// the HTTP layer answers 503 and Atlassian re-sends.
var ErrUnavailable = errors.New("tenant store unavailable")

// ErrKeyEnvironmentMismatch means an installed names an existing tenant but a baseUrl
// of another install key environment (connect.KeyEnvironment) than the tenant's: its
// key came from another key server family (staging for a production tenant, say), so
// it must not change the tenant. The HTTP layer answers 401; the tenant is untouched.
var ErrKeyEnvironmentMismatch = errors.New("install key environment differs from the tenant's")

// ErrInvalidPayload means a lifecycle body (or a payload built by hand) is malformed or
// misses a required field: a 400, never retried.
var ErrInvalidPayload = errors.New("invalid lifecycle payload")

// Event types recorded in a tenant's history.
const (
	EventInstalled   = "installed"
	EventUninstalled = "uninstalled"
	EventEnabled     = "enabled"
	EventDisabled    = "disabled"
	// EventLinked is recorded on an existing tenant when another clientKey is installed
	// with its baseUrl (a site import).
	EventLinked = "linked"
	// EventLicense records a change of license state found by the worker.
	EventLicense = "license"
	// EventWebhook records a change of the registered migration webhook endpoints.
	EventWebhook = "webhook"
)

// Event is one entry of a tenant's history. Changes are human-readable and never
// contain secret values.
type Event struct {
	ID        int64
	ClientKey string
	// Type is one of the Event* constants.
	Type string
	// At is when the event was received (or, for worker updates, observed).
	At time.Time
	// IssuedAt is the JWT iat of a lifecycle event; zero for other events.
	IssuedAt time.Time
	// Applied is false for an event recorded but not applied, because a newer one
	// was applied first; Changes then says why.
	Applied bool
	Changes []string
}

// Link records that two clientKeys were seen with one baseUrl, the mark of a site
// import. Neither tenant is merged or deleted; an operator decides.
type Link struct {
	// ClientKey is the tenant whose install revealed the shared baseUrl (the newer one).
	ClientKey string
	// OtherClientKey is the tenant that already held the baseUrl.
	OtherClientKey string
	BaseURL        string
	DetectedAt     time.Time
}

// InstallResult tells what an Install did.
type InstallResult struct {
	// Tenant is the stored tenant after the install.
	Tenant connectrelay.Tenant
	// EventID is the id of the history row recorded for this install.
	EventID int64
	// Created is true when the clientKey was new.
	Created bool
	// Copy is true for a copy of a delivery already recorded (Delivery): nothing
	// changed, EventID is the first delivery's history row and Tenant the
	// stored tenant.
	Copy bool
	// Applied is false when the install was older (by iat) than one already applied,
	// so only its history row was written.
	Applied bool
	// Changes are the history notes of this install; empty for a repeat of the same
	// install.
	Changes []string
	// LinkedClientKeys are the other tenants found holding this install's baseUrl
	// when it was new for this tenant (site import).
	LinkedClientKeys []string
}
