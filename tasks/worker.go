package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
)

// TenantInitializer is the vendor's initialization of a newly installed (or
// re-installed) tenant: create their own records, call the product API, send a
// welcome. It runs after every verified installed, so it must be idempotent.
// The tenant carries no secret; api calls the tenant's product as the app
// (JWT-signed with the tenant's current secret) without exposing it.
type TenantInitializer interface {
	InitializeTenant(ctx context.Context, t tenant.Tenant, api *product.Client) error
}

// LifecycleListener receives the other lifecycle events once they are recorded:
// "enabled", "disabled" and "uninstalled". It must not delete data: a missed or
// mistaken uninstalled is possible, and installed != licensed.
type LifecycleListener interface {
	TenantLifecycle(ctx context.Context, event string, t tenant.Tenant) error
}

// TenantStore is what the worker needs of the tenant repository.
type TenantStore interface {
	Get(ctx context.Context, clientKey string) (tenant.Tenant, error)
	SetLicense(ctx context.Context, clientKey, state string, checkedAt time.Time) error
	SetWebhookRegistered(ctx context.Context, clientKey string, endpoints []string, at time.Time) error
	List(ctx context.Context, limit, offset int) ([]tenant.Tenant, error)
}

// WebhookAPI reads and replaces the tenant's registered migration webhooks.
type WebhookAPI interface {
	Webhook(ctx context.Context, clientKey string) ([]string, error)
	SetWebhook(ctx context.Context, clientKey string, endpoints []string) error
}

// WorkerDeps are the worker's collaborators.
type WorkerDeps struct {
	Tenants  TenantStore
	Product  *product.Client
	Webhooks WebhookAPI
	// WebhookURL is CONNECT_BASE_URL + "/migration/events".
	WebhookURL  string
	Initializer TenantInitializer // optional
	Listener    LifecycleListener // optional
	Migration   MigrationDeps     // optional: migration tasks fail permanently without it
	Enqueuer    *Enqueuer         // enqueues follow-up tasks (the license sweep)
	Metrics     *metrics.Metrics
	Logger      *slog.Logger
	Now         func() time.Time
}

// Worker runs the task handlers.
type Worker struct {
	d WorkerDeps
}

// NewWorker builds the worker's handlers.
func NewWorker(d WorkerDeps) (*Worker, error) {
	if d.Tenants == nil || d.Product == nil || d.Webhooks == nil || d.Metrics == nil || d.WebhookURL == "" {
		return nil, errors.New("tasks: Tenants, Product, Webhooks, Metrics and WebhookURL are required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Worker{d: d}, nil
}

// Mux routes every task type to its handler, behind the observing middleware.
func (w *Worker) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.Use(w.observe)
	mux.HandleFunc(TypeTenantInit, w.tenantInit)
	mux.HandleFunc(TypeTenantEnabled, w.tenantEnabled)
	mux.HandleFunc(TypeTenantDisabled, w.lifecycleEvent("disabled"))
	mux.HandleFunc(TypeTenantUninstalled, w.lifecycleEvent("uninstalled"))
	mux.HandleFunc(TypeMigrationEvent, w.migrationEvent)
	mux.HandleFunc(TypeMigrationImport, w.migrationImport)
	mux.HandleFunc(TypeLicenseSweep, w.licenseSweep)
	mux.HandleFunc(TypeLicenseCheck, w.licenseCheck)
	mux.HandleFunc(TypeSettleSweep, w.settleSweep)
	return mux
}

func (w *Worker) observe(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		start := time.Now()
		err := next.ProcessTask(ctx, t)
		retried, _ := asynq.GetRetryCount(ctx)
		outcome := "succeeded"
		switch {
		case err == nil:
		case errors.Is(err, asynq.SkipRetry):
			outcome = "failed_permanently"
		case !IsFailure(err):
			outcome = "deferred"
		default:
			outcome = "failed"
		}
		w.d.Metrics.ObserveTask(t.Type(), outcome, retried > 0, time.Since(start))
		return err
	})
}

func decodeLifecycle(t *asynq.Task) (LifecyclePayload, error) {
	var p LifecyclePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ClientKey == "" {
		return p, fmt.Errorf("%s: bad payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	return p, nil
}

// permanent marks errors that no retry can fix, so asynq archives the task at
// once with a clear error instead of retrying for days; operators re-run it from
// the monitoring UI once the cause is fixed.
func permanent(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, asynq.SkipRetry):
		return err
	case errors.Is(err, tenant.ErrNotFound),
		errors.Is(err, product.ErrUnauthorized),
		errors.Is(err, product.ErrForbidden),
		errors.Is(err, product.ErrNotFound),
		errors.Is(err, product.ErrBadRequest),
		errors.Is(err, product.ErrHostNotAllowed),
		errors.Is(err, product.ErrNoSecret),
		errors.Is(err, product.ErrResponseTooLarge),
		errors.Is(err, migration.ErrInvalidEvent),
		errors.Is(err, migration.ErrTenantMismatch),
		errors.Is(err, migration.ErrUploadNotFound),
		errors.Is(err, migration.ErrTransferNotReady):
		return fmt.Errorf("%w (not retried: %w)", err, asynq.SkipRetry)
	default:
		return err
	}
}

// tenantInit runs after a verified installed: record the license state, run the
// vendor's initializer, and register the migration webhook when it is not
// registered yet (with Connect on Forge, enabled is no longer sent, so enabled
// alone must never be what registers it).
func (w *Worker) tenantInit(ctx context.Context, t *asynq.Task) error {
	tn, ok, err := w.installedTenant(ctx, t)
	if !ok {
		return err
	}
	ck := tn.ClientKey
	if err := w.recordLicense(ctx, ck); err != nil {
		return err
	}
	if w.d.Initializer != nil {
		if err := w.d.Initializer.InitializeTenant(ctx, tn, w.d.Product); err != nil {
			return fmt.Errorf("tenant initializer for %s: %w", ck, err)
		}
	}
	if !slices.Contains(tn.WebhookEndpoints, w.d.WebhookURL) {
		if err := w.registerWebhook(ctx, ck); err != nil {
			// The product may refuse registration before the app is enabled;
			// the enabled task registers it then. Server errors are retried.
			if errors.Is(permanent(err), asynq.SkipRetry) {
				w.d.Logger.WarnContext(ctx, "migration webhook not registered at initialization; will be on enabled",
					slog.String("client_key", ck), slog.String("error", err.Error()))
			} else {
				return err
			}
		}
	}
	w.d.Logger.InfoContext(ctx, "tenant initialized", slog.String("client_key", ck))
	return nil
}

// installedTenant loads the tenant a lifecycle task is about. ok is false when the
// task should end with err (nil when the tenant was uninstalled since: its work
// no longer applies).
func (w *Worker) installedTenant(ctx context.Context, t *asynq.Task) (tn tenant.Tenant, ok bool, err error) {
	p, err := decodeLifecycle(t)
	if err != nil {
		return tn, false, err
	}
	tn, err = w.d.Tenants.Get(ctx, p.ClientKey)
	if err != nil {
		return tn, false, permanent(fmt.Errorf("load tenant %s: %w", p.ClientKey, err))
	}
	if !tn.Installed {
		w.d.Logger.InfoContext(ctx, "tenant uninstalled since the task was enqueued; skipped",
			slog.String("client_key", p.ClientKey), slog.String("task_type", t.Type()))
		return tn, false, nil
	}
	return tn, true, nil
}

// registerWebhook makes the product's registered migration webhooks exactly our
// endpoint, reading first so a correct registration is not rewritten.
func (w *Worker) registerWebhook(ctx context.Context, clientKey string) error {
	want := []string{w.d.WebhookURL}
	have, err := w.d.Webhooks.Webhook(ctx, clientKey)
	if err != nil && !errors.Is(err, product.ErrNotFound) {
		return fmt.Errorf("read migration webhook: %w", err)
	}
	if !slices.Equal(have, want) {
		if err := w.d.Webhooks.SetWebhook(ctx, clientKey, want); err != nil {
			return fmt.Errorf("register migration webhook: %w", err)
		}
		w.d.Logger.InfoContext(ctx, "migration webhook registered", slog.String("client_key", clientKey), slog.Any("previous", have))
	}
	if err := w.d.Tenants.SetWebhookRegistered(ctx, clientKey, want, w.d.Now()); err != nil {
		return fmt.Errorf("record migration webhook of %s: %w", clientKey, err)
	}
	return nil
}

func (w *Worker) tenantEnabled(ctx context.Context, t *asynq.Task) error {
	p, err := decodeLifecycle(t)
	if err != nil {
		return err
	}
	if err := w.registerWebhook(ctx, p.ClientKey); err != nil {
		return permanent(err)
	}
	return w.notify(ctx, "enabled", p.ClientKey)
}

func (w *Worker) lifecycleEvent(event string) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		p, err := decodeLifecycle(t)
		if err != nil {
			return err
		}
		return w.notify(ctx, event, p.ClientKey)
	}
}

func (w *Worker) notify(ctx context.Context, event, clientKey string) error {
	if w.d.Listener == nil {
		return nil
	}
	tn, err := w.d.Tenants.Get(ctx, clientKey)
	if err != nil {
		return permanent(fmt.Errorf("load tenant %s: %w", clientKey, err))
	}
	if err := w.d.Listener.TenantLifecycle(ctx, event, tn); err != nil {
		return fmt.Errorf("lifecycle listener (%s) for %s: %w", event, clientKey, err)
	}
	return nil
}

// RetryLater is returned by handlers that want to run again after a given delay
// without counting as a failure (a product Retry-After, a transfer another worker
// holds). RetryDelay honours the delay; IsFailure excludes it from failure counts.
type RetryLater struct {
	After time.Duration
	Err   error
}

func (e *RetryLater) Error() string { return fmt.Sprintf("retry in %s: %v", e.After, e.Err) }
func (e *RetryLater) Unwrap() error { return e.Err }

// IsFailure tells asynq whether an error counts as a failure (it always retries
// non-nil errors): a deliberate "retry later" does not.
func IsFailure(err error) bool {
	var rl *RetryLater
	return !errors.As(err, &rl)
}

// RetryDelay is exponential backoff with jitter: base 2 s doubling per attempt,
// capped at 1 h, each delay drawn from 50-100 % of that; a product's Retry-After
// or a RetryLater delay is honoured when longer. MaxRetry attempts of this span
// about two days before the task is archived.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	const base, ceiling = 2 * time.Second, time.Hour
	d := ceiling
	if n < 20 {
		d = min(base<<n, ceiling)
	}
	// Half fixed, half random: never zero, and retries of a batch spread out.
	d = d/2 + rand.N(d/2+1)
	var rl *RetryLater
	if errors.As(err, &rl) && rl.After > d {
		d = rl.After
	}
	if ra, ok := product.RetryAfter(err); ok && ra > d {
		d = ra
	}
	return d
}

// ErrorHandler logs every failed attempt with what an operator needs (task type,
// tenant, attempt, error) and never the payload, which could one day hold
// something sensitive from a vendor's task.
func (w *Worker) ErrorHandler() asynq.ErrorHandler {
	return asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		id, _ := asynq.GetTaskID(ctx)
		var ids struct {
			ClientKey string `json:"clientKey"`
		}
		_ = json.Unmarshal(t.Payload(), &ids)
		level := slog.LevelWarn
		if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
			level = slog.LevelError
		}
		w.d.Logger.Log(ctx, level, "task failed",
			slog.String("task_type", t.Type()), slog.String("task_id", id), slog.String("client_key", ids.ClientKey),
			slog.Int("attempt", retried+1), slog.Int("max_retry", maxRetry),
			slog.Bool("archived", errors.Is(err, asynq.SkipRetry) || retried >= maxRetry), slog.String("error", err.Error()))
	})
}
