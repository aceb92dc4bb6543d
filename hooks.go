package connectrelay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"time"

	"github.com/connectrelay/connectrelay/product"
)

// Initializer is the vendor's initialization of an installed tenant: create
// their own records, call the product API, send a welcome.
type Initializer interface {
	// InitializeTenant runs after every verified installed callback (first
	// install, re-install, secret rotation, site rename, descriptor upgrade),
	// once the license state is recorded, so it must be idempotent. A nil
	// error ends the task; an error retries it with backoff (an error wrapping
	// a final product answer, see [product.Final], archives it instead).
	InitializeTenant(ctx context.Context, req *InitRequest) error
}

// InitRequest is what an [Initializer] is given. Fields may be added.
type InitRequest struct {
	// Tenant is the tenant as stored after the installed callback.
	Tenant Tenant
	// Product calls the tenant's product REST API as the app, JWT-signed with
	// the tenant's current secret, which the vendor's code never sees. Pass
	// Tenant.ID() as the tenant.
	Product *product.Client
}

// EventType names a change this service reports to the vendor: what happened to a
// tenant (tenant.*, to a LifecycleListener) or to a migration transfer
// (migration.*, to a MigrationListener). The values are also the "type" of
// forwarded events.
type EventType string

// Event types. A listener must ignore types it does not know: later versions
// deliver more of them.
const (
	// EventInstalled: a new tenant installed the app.
	EventInstalled EventType = "tenant.installed"
	// EventUpdated: an installed of a known tenant changed what is stored (a
	// secret rotation, a site rename, new versions); Changes lists what.
	EventUpdated EventType = "tenant.updated"
	// EventSiteImportDetected: the tenant's baseUrl is also held by other
	// tenants (LinkedClientKeys), the mark of a site import. Nothing is merged.
	EventSiteImportDetected EventType = "tenant.site_import_detected"
	// EventEnabled: the app was enabled on the tenant's site.
	EventEnabled EventType = "tenant.enabled"
	// EventDisabled: the app was disabled on the tenant's site.
	EventDisabled EventType = "tenant.disabled"
	// EventUninstalled: the app was uninstalled from the tenant's site. The
	// tenant is kept; an uninstall can be missed, or be a mistake.
	EventUninstalled EventType = "tenant.uninstalled"
	// EventLicenseChanged: the tenant's license state changed (Changes says from
	// what to what; Tenant.LicenseState is the new one).
	EventLicenseChanged EventType = "tenant.license_changed"

	// EventForgeInstalled: a Forge installed arrived for the tenant's
	// installation (Tenant.Forge); Changes says whether it is new, a
	// reinstall on a known site (Tenant.Forge.PreviousInstallationID) or a
	// repeat.
	EventForgeInstalled EventType = "forge.installed"
	// EventForgeUpgraded: a Forge major version upgrade (Tenant.Forge.AppVersion).
	EventForgeUpgraded EventType = "forge.upgraded"
	// EventForgePreUninstall: Forge announced the uninstall (the preUninstall
	// module). The installation may still be called for a while.
	EventForgePreUninstall EventType = "forge.pre_uninstall"
	// EventForgeUninstalled: a Forge uninstalled arrived (undocumented, kept
	// if it ever does).
	EventForgeUninstalled EventType = "forge.uninstalled"

	// EventTransferReady: the platform's listener-triggered arrived; the
	// transfer's uploads are imported from now on.
	EventTransferReady EventType = "migration.transfer_ready"
	// EventTransferSettled: the transfer is settled at the product
	// (Transfer.SettleStatus, Transfer.SettleResult).
	EventTransferSettled EventType = "migration.transfer_settled"
	// EventMigrationEvent: the platform sent an event of a type this service
	// does not know; Raw is its body.
	EventMigrationEvent EventType = "migration.event"
)

// LifecycleEvent is one recorded change of a tenant, as a [LifecycleListener]
// receives it. Fields may be added.
type LifecycleEvent struct {
	// ID identifies the event; it is the same every time the event is delivered
	// again, so use it to drop repeats.
	ID string
	// Sequence increases with every event of the tenant (it is not contiguous):
	// an event with a lower Sequence than one already handled is stale.
	Sequence int64
	// Type is what happened.
	Type EventType
	// At is when the change was recorded.
	At time.Time
	// Tenant is the tenant as stored when the event is delivered.
	Tenant Tenant
	// Changes are the human-readable changes of EventUpdated and
	// EventLicenseChanged (never secret values).
	Changes []string
	// LinkedClientKeys are the other tenants holding the tenant's baseUrl, for
	// EventSiteImportDetected.
	LinkedClientKeys []string
}

// LifecycleListener hears the changes of tenants.
type LifecycleListener interface {
	// TenantLifecycle is called at least once per event, in the order the
	// events were recorded for a tenant as far as delivery allows (compare
	// Sequence). It must not delete data: a missed or mistaken uninstalled is
	// possible, and installed is not licensed. An error retries the event with
	// backoff.
	TenantLifecycle(ctx context.Context, ev *LifecycleEvent) error
}

// TransferEvent is one change of a migration transfer, as a [MigrationListener]
// receives it. Fields may be added.
type TransferEvent struct {
	// ID identifies the event across deliveries.
	ID string
	// Sequence increases with every event of the tenant, as in LifecycleEvent.
	Sequence int64
	// Type is what happened.
	Type EventType
	// At is when the change was recorded.
	At time.Time
	// Tenant is the transfer's tenant as stored when the event is delivered.
	Tenant Tenant
	// Transfer is the transfer as stored when the event is delivered; zero for
	// an EventMigrationEvent that names none.
	Transfer Transfer
	// Raw is the platform's event body, for EventMigrationEvent.
	Raw json.RawMessage
}

// MigrationListener hears the changes of migration transfers (uploads go to the
// Importer).
type MigrationListener interface {
	// TransferEvent is called at least once per event; an error retries it.
	TransferEvent(ctx context.Context, ev *TransferEvent) error
}

// Importer receives the data of each uploaded file of an app migration.
type Importer interface {
	// Import streams req.Data into the vendor's store. It returns nil only once
	// the data is durably imported; the upload is then recorded imported and
	// Import is never called for it again. An error retries the upload with
	// backoff; an error wrapping ErrImportFailed, or a final product answer,
	// fails it (and with it the transfer). An error wrapping ErrImportPending
	// means the result will be reported later through the internal API.
	//
	// A worker that dies after Import returned nil but before the upload was
	// recorded runs Import once more for the same upload, so Import must be
	// idempotent per (req.Transfer.TransferID, req.S3Key).
	//
	// ctx is cancelled when the transfer is cancelled, fails or is settled
	// elsewhere, and when the worker shuts down; reads of req.Data fail once
	// it is. Files can be many gigabytes: stream them, never read them whole.
	Import(ctx context.Context, req *ImportRequest) error
}

// Errors an Importer returns to say what became of an upload.
var (
	// ErrImportFailed: the upload can never be imported; it fails at once,
	// without retries, and its transfer fails with it.
	ErrImportFailed = errors.New("import failed")
	// ErrImportPending: the upload was handed over and its result will be
	// reported later (POST /v1/migrations/{transferId}/uploads/{s3Key}/result
	// on the internal listener); until then it keeps the transfer open.
	ErrImportPending = errors.New("import result pending")
)

// ImportRequest is what an [Importer] is given. Fields may be added.
type ImportRequest struct {
	// Transfer is the transfer the upload belongs to.
	Transfer Transfer
	// Label is the label the server-side app gave the upload ("" when unknown).
	Label string
	// S3Key identifies the upload within the transfer.
	S3Key string
	// Data is the upload's content, streamed from the platform's storage. What
	// Import leaves unread is read (and hashed) by the service after it returns.
	Data io.Reader
	// Attempt counts the attempts at this upload, starting at 1.
	Attempt int
	// AMP calls the App Migration Platform API of the transfer's tenant, for
	// example to map server identifiers to cloud ones.
	AMP MigrationAPI
}

// MigrationAPI is the part of the App Migration Platform API an [Importer] may
// call; [product.AMP] implements it. Pass req.Transfer.ClientKey and
// req.Transfer.TransferID.
type MigrationAPI interface {
	// Mappings iterates over every server-to-cloud mapping of a namespace
	// ("identity:user", "jira:issue", ...), fetching pages lazily.
	Mappings(ctx context.Context, clientKey, transferID, namespace string, pageSize int) iter.Seq2[product.Mapping, error]
	// FindMappings looks up the cloud IDs of specific server keys.
	FindMappings(ctx context.Context, clientKey, transferID, namespace string, keys []string) (map[string]string, error)
	// Feedback sends details back to the server-side app; new feedback
	// replaces the previous one.
	Feedback(ctx context.Context, clientKey, transferID string, details any) error
}

var _ MigrationAPI = (*product.AMP)(nil)
