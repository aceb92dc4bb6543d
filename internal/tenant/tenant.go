// Package tenant keeps the Atlassian Connect tenants of the app: one per clientKey,
// with the shared secret encrypted at rest, a history of every lifecycle event, and the
// links between tenants that share a baseUrl after a site import.
//
// What it is built against (DESIGN.md "falsehoods"):
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
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound means no tenant has the clientKey.
var ErrNotFound = errors.New("tenant not found")

// ErrUnavailable means the store could not answer now: Postgres is unreachable, timed
// out, is shutting down, or hit a transient conflict. Retrying later can succeed, so
// the HTTP layer answers 503 and Atlassian re-sends.
var ErrUnavailable = errors.New("tenant store unavailable")

// ErrInvalidPayload means a lifecycle body (or a payload built by hand) is malformed or
// misses a required field: a 400, never retried.
var ErrInvalidPayload = errors.New("invalid lifecycle payload")

// License states stored on a tenant. A tenant starts "unknown" because installed says
// nothing about licensing; the worker records what the License REST API answers.
const (
	LicenseUnknown  = "unknown"
	LicenseActive   = "active"
	LicenseInactive = "inactive"
)

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

// HostInfo is what a product host says about itself and the installation in an
// installed body. It is embedded in both InstallPayload (what arrived) and Tenant (what
// is stored), so the two cannot drift apart. JSON names are given per field.
type HostInfo struct {
	// ClientKey (clientKey) identifies the tenant. It never changes for a tenant; a
	// site import or restore produces a new one.
	ClientKey string
	// AppKey (key) is the app key the product installed.
	AppKey string
	// BaseURL (baseUrl) is where to call the product's REST API. It changes on site
	// rename and is not unique across tenants.
	BaseURL string
	// DisplayURL (displayUrl) is the custom domain for user-facing links, if any.
	DisplayURL string
	// DisplayURLServicedeskHelpCenter (displayUrlServicedeskHelpCenter).
	DisplayURLServicedeskHelpCenter string
	// ProductType (productType) is "jira" or "confluence".
	ProductType string
	// Description (description) is the product's description of the site.
	Description string
	// ServerVersion (serverVersion) is the product build.
	ServerVersion string
	// PluginsVersion (pluginsVersion) is the Connect version that installed the app;
	// kept per tenant because not every tenant runs the latest descriptor.
	PluginsVersion string
	// ServiceEntitlementNumber (serviceEntitlementNumber) is the legacy SEN.
	ServiceEntitlementNumber string
	// EntitlementID (entitlementId) is the commerce entitlement id.
	EntitlementID string
	// EntitlementNumber (entitlementNumber) is the commerce entitlement number.
	EntitlementNumber string
	// OAuthClientID (oauthClientId) is used for OAuth 2.0 JWT-bearer impersonation.
	OAuthClientID string
	// InstallationID (installationId) is the Connect-on-Forge installation ARI; kept
	// because Connect is moving to Forge.
	InstallationID string
	// CloudID (cloudId) is the site's cloud id, sent to Connect-on-Forge apps.
	CloudID string
	// Extra holds every body field not modelled above, as a JSON object, so fields
	// Atlassian adds later are not lost. It never holds sharedSecret or publicKey.
	Extra json.RawMessage
}

// Tenant is one stored installation of the app, keyed by ClientKey. It never carries
// the shared secret; use Store.SharedSecret.
type Tenant struct {
	HostInfo
	// Installed is false after an applied uninstalled. The row and secret are kept:
	// Atlassian may install again, and an uninstall can be missed or be a mistake.
	Installed bool
	// Enabled follows enabled/disabled. A first install is not enabled until enabled
	// arrives, and installed never enables by itself. Connect-on-Forge stops sending
	// enabled/disabled, so nothing should depend on Enabled alone.
	Enabled bool
	// FirstInstalledAt is when the tenant row was created.
	FirstInstalledAt time.Time
	// LastInstalledAt is when the last applied installed was received.
	LastInstalledAt time.Time
	// LastLifecycleAt is when the latest lifecycle event, applied or not, was received.
	LastLifecycleAt time.Time
	// DataIssuedAt is the JWT iat of the installed whose data (secret, baseUrl,
	// versions) is stored: an installed with an older iat is recorded in history but
	// not saved, so a delayed retry cannot put back a secret Atlassian has rotated.
	DataIssuedAt time.Time
	// InstalledIssuedAt is the JWT iat of the event that last set Installed (the first
	// install, an uninstall, a reinstall). See Store.SetEnabled for the ordering rules.
	InstalledIssuedAt time.Time
	// EnabledIssuedAt is the JWT iat of the event that last set Enabled.
	EnabledIssuedAt time.Time
	// LicenseState is LicenseUnknown until the worker checks the License REST API.
	LicenseState string
	// LicenseCheckedAt is when LicenseState was last checked; nil if never.
	LicenseCheckedAt *time.Time
	// WebhookEndpoints are the migration webhook endpoints last registered by the
	// worker; empty if never registered.
	WebhookEndpoints []string
	// WebhookRegisteredAt is when WebhookEndpoints were registered; nil if never.
	WebhookRegisteredAt *time.Time
	// SecretKeyID names the key that encrypted the stored secret, so an operator can
	// see which rows still need re-encryption after a key rotation.
	SecretKeyID string
}

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
	Tenant Tenant
	// EventID is the id of the history row recorded for this install.
	EventID int64
	// Created is true when the clientKey was new.
	Created bool
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
