package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/dedupe"
	"github.com/connectrelay/connectrelay/internal/lifecycle"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// Lifecycle is the tenant lifecycle logic the handlers call.
type Lifecycle interface {
	Initialize(ctx context.Context, clientKey string) error
	ForgeInitialize(ctx context.Context, installationID string) error
	Enabled(ctx context.Context, clientKey string) error
	Deliver(ctx context.Context, eventID int64) error
	RecheckLicense(ctx context.Context, clientKey string) error
	InstalledTenants(ctx context.Context) iter.Seq2[string, error]
}

// MigrationRunner is the transfer state machine as the handlers drive it.
type MigrationRunner interface {
	HandleEvent(ctx context.Context, clientKey string, ev migration.Event) error
	Import(ctx context.Context, ref migration.UploadRef) error
	FailUpload(ctx context.Context, ref migration.UploadRef, cause error) error
	ReportResult(ctx context.Context, ref migration.UploadRef, imported bool, message string) error
	SettlePending(ctx context.Context, limit int) (int, error)
	RequeueStale(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	ReconcileStale(ctx context.Context, olderThan, giveUpAfter time.Duration, limit int) (int, error)
	PruneEvents(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
}

// EventFeed is what the sweep needs of the event feed.
type EventFeed interface {
	Prune(ctx context.Context, olderThan time.Duration, limit int) (int64, error)
}

// Deduper claims a key for processing (see package dedupe).
type Deduper interface {
	Claim(ctx context.Context, key string) (*dedupe.Claim, error)
}

var (
	_ Lifecycle       = (*lifecycle.Service)(nil)
	_ MigrationRunner = (*migration.Machine)(nil)
	_ Deduper         = (*dedupe.Store)(nil)
)

// Deps are the handlers' collaborators. A task whose collaborator is missing
// fails permanently (the worker was built without it).
type Deps struct {
	// Lifecycle runs the tenant:* tasks.
	Lifecycle Lifecycle
	// Migration runs the migration:* tasks and the settle sweep.
	Migration MigrationRunner
	// Dedupe claims migration events by tenant and dedupe key.
	Dedupe Deduper
	// SweepClaims claims each day's license sweep.
	SweepClaims Deduper
	// Enqueuer enqueues the license checks of the sweep. Required.
	Enqueuer *Enqueuer
	// Events is the event feed, whose delivered events the settle sweep prunes.
	Events EventFeed
	// Metrics counts task outcomes. Required.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Handlers runs the task handlers.
type Handlers struct {
	d Deps
}

// NewHandlers validates d and returns the handlers.
func NewHandlers(d Deps) (*Handlers, error) {
	if d.Enqueuer == nil || d.Metrics == nil {
		return nil, errors.New("tasks: Enqueuer and Metrics are required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Handlers{d: d}, nil
}

// Mux routes every task type to its handler, behind the observing middleware.
func (h *Handlers) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.Use(h.observe)
	mux.HandleFunc(TypeTenantInit, h.tenantInit)
	mux.HandleFunc(TypeTenantEnabled, h.tenantEnabled)
	mux.HandleFunc(TypeForgeInit, h.forgeInit)
	mux.HandleFunc(TypeEventDeliver, h.eventDeliver)
	mux.HandleFunc(TypeLicenseCheck, h.licenseCheck)
	mux.HandleFunc(TypeMigrationEvent, h.migrationEvent)
	mux.HandleFunc(TypeMigrationImport, h.migrationImport)
	mux.HandleFunc(TypeMigrationResult, h.migrationResult)
	mux.HandleFunc(TypeLicenseSweep, h.licenseSweep)
	mux.HandleFunc(TypeSettleSweep, h.settleSweep)
	return mux
}

func (h *Handlers) observe(next asynq.Handler) asynq.Handler {
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
		h.d.Metrics.ObserveTask(t.Type(), outcome, retried > 0, time.Since(start))
		return err
	})
}

// decode reads a task's JSON payload into p; a payload that does not decode
// fails the task permanently.
func decode[P any](t *asynq.Task, valid func(*P) bool) (P, error) {
	var p P
	if err := json.Unmarshal(t.Payload(), &p); err != nil || !valid(&p) {
		return p, fmt.Errorf("%s: bad payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	return p, nil
}

// notConfigured is the error of a task whose collaborator this worker lacks.
func notConfigured(t *asynq.Task) error {
	return fmt.Errorf("%s tasks are not configured on this worker: %w", t.Type(), asynq.SkipRetry)
}

// ErrorHandler logs every failed attempt with what an operator needs (task type,
// tenant, attempt, error) and never the payload, which could one day hold
// something sensitive from a vendor's task.
func (h *Handlers) ErrorHandler() asynq.ErrorHandler {
	return asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		id, _ := asynq.GetTaskID(ctx)
		var ids struct {
			ClientKey string `json:"clientKey"`
		}
		_ = json.Unmarshal(t.Payload(), &ids)
		archived := errors.Is(err, asynq.SkipRetry) || retried >= maxRetry
		level := slog.LevelWarn
		if archived {
			level = slog.LevelError
		}
		h.d.Logger.Log(ctx, level, "task failed",
			slog.String("task_type", t.Type()), slog.String("task_id", id), slog.String("client_key", ids.ClientKey),
			slog.Int("attempt", retried+1), slog.Int("max_retry", maxRetry),
			slog.Bool("archived", archived), slog.String("error", err.Error()))
	})
}
