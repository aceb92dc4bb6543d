package connectrelay

import (
	"context"
	"io"
	"iter"

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

// EventType names a lifecycle event.
type EventType string

// Lifecycle events. A [LifecycleListener] must ignore types it does not know:
// later versions deliver more of them.
const (
	// EventEnabled: the app was enabled on the tenant's site.
	EventEnabled EventType = "enabled"
	// EventDisabled: the app was disabled on the tenant's site.
	EventDisabled EventType = "disabled"
	// EventUninstalled: the app was uninstalled from the tenant's site. The
	// tenant is kept; an uninstall can be missed, or be a mistake.
	EventUninstalled EventType = "uninstalled"
)

// LifecycleEvent is one recorded lifecycle event, as a [LifecycleListener]
// receives it. Fields may be added.
type LifecycleEvent struct {
	// Type is what happened.
	Type EventType
	// Tenant is the tenant as stored after the event was applied.
	Tenant Tenant
}

// LifecycleListener hears the lifecycle events other than installed (which
// goes to the [Initializer]).
type LifecycleListener interface {
	// TenantLifecycle is called once per recorded event, in the order the
	// worker processes them (not necessarily the order Atlassian sent them).
	// It must not delete data: a missed or mistaken uninstalled is possible,
	// and installed is not licensed. An error retries the event.
	TenantLifecycle(ctx context.Context, ev *LifecycleEvent) error
}

// Importer receives the data of each uploaded file of an app migration.
type Importer interface {
	// Import streams req.Data into the vendor's store. It returns nil only once
	// the data is durably imported; the upload is then recorded imported and
	// Import is never called for it again. An error retries the upload with
	// backoff; an error wrapping a final product answer fails it.
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
