// Package lifecycle is the worker's side of the tenant lifecycle: what happens
// after a verified installed (record the license, run the vendor's
// Initializer, register the migration webhook), after enabled (register the
// webhook), when a tenant's license is checked again, and when an event of the
// feed (internal/outbox) is delivered to the vendor's listeners.
//
// The methods take a clientKey and read the tenant from the store, so that a
// task that runs late acts on the tenant as it is now. They never delete
// anything: installed is not licensed, and an uninstalled can be missed or be
// a mistake. Nothing here depends on receiving enabled (Connect-on-Forge apps
// no longer get it), so installed alone registers the migration webhook.
//
// Errors are returned as they came, for the task layer to decide whether a
// retry can help; errors of the vendor's hooks are wrapped in *HookError, which
// is always retried.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
)

// Store is what the lifecycle logic needs of the tenant store.
type Store interface {
	Get(ctx context.Context, clientKey string) (connectrelay.Tenant, error)
	SetLicense(ctx context.Context, clientKey string, state connectrelay.LicenseState, checkedAt time.Time) error
	SetWebhookRegistered(ctx context.Context, clientKey string, endpoints []string, at time.Time) error
	Page(ctx context.Context, q tenant.Query) ([]connectrelay.Tenant, string, error)
}

// TransferReader reads a transfer of a tenant; *migration.Machine implements it.
type TransferReader interface {
	Transfer(ctx context.Context, clientKey, transferID string) (connectrelay.Transfer, error)
}

// Webhooks reads and replaces a tenant's registered migration webhook
// endpoints; *product.AMP implements it.
type Webhooks interface {
	Webhook(ctx context.Context, clientKey string) ([]string, error)
	SetWebhook(ctx context.Context, clientKey string, endpoints []string) error
}

var (
	_ Store          = (*tenant.Store)(nil)
	_ Webhooks       = (*product.AMP)(nil)
	_ TransferReader = (*migration.Machine)(nil)
)

// Config configures a Service.
type Config struct {
	// Tenants is the tenant store. Required.
	Tenants Store
	// Product calls the tenants' products (the License REST API). Required.
	Product *product.Client
	// Webhooks registers the migration webhook. Required.
	Webhooks Webhooks
	// WebhookURL is the absolute URL of the migration webhook. Required.
	WebhookURL string
	// Initializer is the vendor's initialization; none when nil.
	Initializer connectrelay.Initializer
	// Events is the event feed Deliver reads. Required.
	Events *outbox.Store
	// Transfers reads the transfer of a migration event. Required.
	Transfers TransferReader
	// Listener hears the tenant events; none when nil.
	Listener connectrelay.LifecycleListener
	// MigrationListener hears the transfer events; none when nil.
	MigrationListener connectrelay.MigrationListener
	// Forge configures the Forge installations' work; without its Store,
	// ForgeInitialize fails.
	Forge ForgeConfig
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service runs the lifecycle logic. It is safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Tenants == nil || cfg.Product == nil || cfg.Webhooks == nil || cfg.WebhookURL == "" || cfg.Events == nil || cfg.Transfers == nil {
		return nil, errors.New("lifecycle: Tenants, Product, Webhooks, WebhookURL, Events and Transfers are required")
	}
	s := &Service{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// HookError is an error returned by one of the vendor's hooks. The task that
// called the hook is retried whatever the error says: the vendor's code, not
// the product, decided it failed.
type HookError struct {
	// Hook names the hook: "initializer" or "lifecycle listener".
	Hook string
	Err  error
}

// Error names the hook and its error.
func (e *HookError) Error() string { return e.Hook + ": " + e.Err.Error() }

// Unwrap returns the hook's error.
func (e *HookError) Unwrap() error { return e.Err }

// final reports whether err is an answer no retry changes: a final product
// answer, or a tenant that does not exist.
func final(err error) bool {
	return product.Final(err) || errors.Is(err, tenant.ErrNotFound)
}

// installed loads the tenant a task is about; ok is false for a tenant
// uninstalled since the task was enqueued, whose work no longer applies.
func (s *Service) installed(ctx context.Context, clientKey, what string) (connectrelay.Tenant, bool, error) {
	tn, err := s.cfg.Tenants.Get(ctx, clientKey)
	if err != nil {
		return tn, false, err
	}
	if !tn.Installed {
		s.log.InfoContext(ctx, "tenant uninstalled since the task was enqueued; skipped",
			slog.String("client_key", clientKey), slog.String("task", what))
		return tn, false, nil
	}
	return tn, true, nil
}

// Initialize runs after a verified installed: it records the license state,
// runs the Initializer, and registers the migration webhook when it is not
// registered yet. A tenant uninstalled since is skipped (nil). A final answer
// to the webhook registration is logged, not returned: the product may refuse
// it before the app is enabled, and enabled registers it then.
func (s *Service) Initialize(ctx context.Context, clientKey string) error {
	return wrap(s.initialize(ctx, clientKey))
}

func (s *Service) initialize(ctx context.Context, clientKey string) error {
	tn, ok, err := s.installed(ctx, clientKey, "initialize")
	if !ok {
		return err
	}
	if err := s.checkLicense(ctx, clientKey); err != nil {
		return err
	}
	if s.cfg.Initializer != nil {
		if err := s.cfg.Initializer.InitializeTenant(ctx, &connectrelay.InitRequest{Tenant: tn, Product: s.cfg.Product}); err != nil {
			return &HookError{Hook: "initializer", Err: err}
		}
	}
	if !slices.Contains(tn.WebhookEndpoints, s.cfg.WebhookURL) {
		if err := s.registerWebhook(ctx, clientKey); err != nil {
			if !final(err) {
				return err
			}
			s.log.WarnContext(ctx, "migration webhook not registered at initialization; will be on enabled",
				slog.String("client_key", clientKey), slog.String("error", err.Error()))
		}
	}
	s.log.InfoContext(ctx, "tenant initialized", slog.String("client_key", clientKey))
	return nil
}

// Enabled registers the migration webhook when it is not exactly ours.
func (s *Service) Enabled(ctx context.Context, clientKey string) error {
	return wrap(s.registerWebhook(ctx, clientKey))
}

// Deliver hands event id of the event feed to the listener of its kind, with
// the tenant (and transfer) as stored now. An event pruned since is skipped; a
// listener's error is a *HookError (retried). With no listener of either kind
// there is nothing to do, and the feed is not read.
func (s *Service) Deliver(ctx context.Context, id int64) error {
	if s.cfg.Listener == nil && s.cfg.MigrationListener == nil {
		return nil
	}
	ev, err := s.cfg.Events.Get(ctx, id)
	if errors.Is(err, outbox.ErrNotFound) {
		s.log.WarnContext(ctx, "event no longer in the feed; not delivered", slog.Int64("event_id", id))
		return nil
	}
	if err != nil {
		return wrap(err)
	}
	return wrap(s.deliver(ctx, ev))
}

func (s *Service) deliver(ctx context.Context, ev outbox.Event) error {
	migrationEvent := strings.HasPrefix(string(ev.Type), "migration.")
	if (migrationEvent && s.cfg.MigrationListener == nil) || (!migrationEvent && s.cfg.Listener == nil) {
		return nil
	}
	tn, err := s.cfg.Tenants.Get(ctx, ev.ClientKey)
	if err != nil {
		return err
	}
	id := "evt_" + strconv.FormatInt(ev.ID, 10)
	if !migrationEvent {
		le := &connectrelay.LifecycleEvent{ID: id, Sequence: ev.ID, Type: ev.Type, At: ev.CreatedAt, Tenant: tn,
			Changes: ev.Data.Changes, LinkedClientKeys: ev.Data.LinkedClientKeys}
		if err := s.cfg.Listener.TenantLifecycle(ctx, le); err != nil {
			return &HookError{Hook: "lifecycle listener (" + string(ev.Type) + ")", Err: err}
		}
		return nil
	}
	te := &connectrelay.TransferEvent{ID: id, Sequence: ev.ID, Type: ev.Type, At: ev.CreatedAt, Tenant: tn, Raw: ev.Data.Raw}
	if ev.TransferID != "" {
		te.Transfer, err = s.cfg.Transfers.Transfer(ctx, ev.ClientKey, ev.TransferID)
		if err != nil && !errors.Is(err, migration.ErrTransferNotFound) {
			return err
		}
	}
	if err := s.cfg.MigrationListener.TransferEvent(ctx, te); err != nil {
		return &HookError{Hook: "migration listener (" + string(ev.Type) + ")", Err: err}
	}
	return nil
}

// registerWebhook makes the product's registered migration webhooks exactly
// ours, reading first so that a correct registration is not rewritten, and
// records the registration.
func (s *Service) registerWebhook(ctx context.Context, clientKey string) error {
	want := []string{s.cfg.WebhookURL}
	have, err := s.cfg.Webhooks.Webhook(ctx, clientKey)
	if err != nil && !errors.Is(err, product.ErrNotFound) {
		return err
	}
	if !slices.Equal(have, want) {
		if err := s.cfg.Webhooks.SetWebhook(ctx, clientKey, want); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "migration webhook registered", slog.String("client_key", clientKey), slog.Any("previous", have))
	}
	if err := s.cfg.Tenants.SetWebhookRegistered(ctx, clientKey, want, s.now()); err != nil {
		return fmt.Errorf("record migration webhook: %w", err)
	}
	return nil
}

// CheckLicense asks the product for the app's license on the tenant's site and
// records the coarse state. A 401 is returned (no other call with this secret
// can work either); other final answers (403, 404, 400) are logged and the
// stored state left as it was, so that reading license information never
// blocks a tenant's initialization. Transient failures are returned.
func (s *Service) CheckLicense(ctx context.Context, clientKey string) error {
	return wrap(s.checkLicense(ctx, clientKey))
}

func (s *Service) checkLicense(ctx context.Context, clientKey string) error {
	checkedAt := s.now()
	info, err := s.cfg.Product.Addon(ctx, clientKey)
	if err != nil {
		if final(err) && !errors.Is(err, product.ErrUnauthorized) {
			s.log.WarnContext(ctx, "license state not readable; left unchanged",
				slog.String("client_key", clientKey), slog.String("error", err.Error()))
			return nil
		}
		return fmt.Errorf("license check: %w", err)
	}
	if err := s.cfg.Tenants.SetLicense(ctx, clientKey, licenseState(info), checkedAt); err != nil {
		return fmt.Errorf("record license: %w", err)
	}
	return nil
}

// RecheckLicense is CheckLicense for a tenant that is still installed; an
// uninstalled tenant is skipped (nil).
func (s *Service) RecheckLicense(ctx context.Context, clientKey string) error {
	if _, ok, err := s.installed(ctx, clientKey, "license check"); !ok {
		return wrap(err)
	}
	return wrap(s.checkLicense(ctx, clientKey))
}

// wrap prefixes an error leaving the package.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("lifecycle: %w", err)
}

// licenseState reduces the product's answer to the state stored on a tenant.
func licenseState(info product.AddonInfo) connectrelay.LicenseState {
	switch {
	case info.License == nil:
		return connectrelay.LicenseUnknown
	case info.License.Active:
		return connectrelay.LicenseActive
	default:
		return connectrelay.LicenseInactive
	}
}

// installedPage is how many tenants InstalledTenants reads per query.
const installedPage = 500

// InstalledTenants yields the clientKey of every installed tenant, in clientKey
// order, reading the store a page at a time. An error is yielded once, last.
func (s *Service) InstalledTenants(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		installed := true
		q := tenant.Query{Installed: &installed, Limit: installedPage}
		for {
			// Keyset paging (clientKey order, installed only): each page is one
			// index range, however many tenants came before it, and a tenant
			// installed or removed meanwhile shifts no other.
			page, next, err := s.cfg.Tenants.Page(ctx, q)
			if err != nil {
				yield("", fmt.Errorf("list tenants: %w", err))
				return
			}
			for _, tn := range page {
				if !yield(tn.ClientKey, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			q.After = next
		}
	}
}
