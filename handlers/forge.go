package handlers

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/tasks"
)

// Forge route paths (docs/forge.md), served when FORGE_APP_ID is set. A Forge
// manifest's endpoint points its remote's route.path at them.
const (
	PathForgeLifecycle    = "/forge/lifecycle"
	PathForgePreUninstall = "/forge/pre-uninstall"
	PathForgeMigration    = "/forge/migration"
)

// ForgeVerifier verifies the Forge Invocation Token of a request, bound to the
// route's module keys (none = any); *forge.Verifier implements it.
type ForgeVerifier interface {
	Verify(ctx context.Context, r *http.Request, moduleKeys ...string) (*forge.Claims, error)
}

// ForgeStore records verified Forge deliveries; *tenant.Store implements it.
type ForgeStore interface {
	RecordForge(ctx context.Context, ev tenant.ForgeEvent) (tenant.ForgeResult, error)
}

// ForgeDeps are the collaborators of the /forge/* routes, mounted only when
// Config.ForgeAppID is set.
type ForgeDeps struct {
	Verifier ForgeVerifier
	Store    ForgeStore
}

var (
	_ ForgeVerifier = (*forge.Verifier)(nil)
	_ ForgeStore    = (*tenant.Store)(nil)
)

// mountForge adds the Forge routes to e.
func (s *Server) mountForge(e *echo.Echo) error {
	if s.d.Forge.Verifier == nil || s.d.Forge.Store == nil {
		return errors.New("handlers: FORGE_APP_ID is set but Deps.Forge lacks Verifier or Store")
	}
	e.POST(PathForgeLifecycle, s.forgeRoute("forge_lifecycle", s.forgeLifecycle))
	e.POST(PathForgePreUninstall, s.forgeRoute("forge_pre_uninstall", s.forgePreUninstall))
	e.POST(PathForgeMigration, s.forgeMigration)
	return nil
}

// forgeRoute counts the outcome of a Forge delivery, as lifecycle does for
// Connect callbacks, and logs a refusal.
func (s *Server) forgeRoute(event string, h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := h(c); err != nil {
			s.errorHandler(err, c)
			s.logRejected(c, event, err)
		}
		s.d.Metrics.LifecycleCallbacks.WithLabelValues(event, outcome(c.Response().Status)).Inc()
		return nil
	}
}

// forgeRequest is a verified Forge delivery: its claims, its event object
// (unwrapped from a {"payload": ...} envelope) and the request's budget.
type forgeRequest struct {
	claims *forge.Claims
	event  []byte
	retry  forge.RetryContext
	ctx    context.Context
}

// verifyForge reads the body and verifies the token under the request budget:
// 401 without detail for any token failure (with a Bearer challenge), 503 when
// the key set cannot be fetched and no earlier one is held, 400 for a body
// that is not a JSON object. The caller must call cancel.
func (s *Server) verifyForge(c echo.Context, modules []string) (forgeRequest, context.CancelFunc, error) {
	body, err := s.readBody(c)
	if err != nil {
		return forgeRequest{}, func() {}, err
	}
	ctx, cancel := budget(c)
	claims, err := s.d.Forge.Verifier.Verify(ctx, c.Request(), modules...)
	if err != nil {
		if forge.HTTPStatus(err) == http.StatusServiceUnavailable {
			return forgeRequest{}, cancel, fail(http.StatusServiceUnavailable, "authentication temporarily unavailable", err)
		}
		return forgeRequest{}, cancel, &httpError{status: http.StatusUnauthorized, reason: "unauthorized", err: err, bearer: true}
	}
	event, rc, err := forge.Unwrap(body)
	if err != nil {
		return forgeRequest{}, cancel, &httpError{status: http.StatusBadRequest, reason: "body is not a Forge event object", field: "body", err: err}
	}
	return forgeRequest{claims: claims, event: event, retry: rc, ctx: ctx}, cancel, nil
}

// forgeLifecycle handles avi:forge:installed:app, avi:forge:upgraded:app and
// (tolerated, undocumented) avi:forge:uninstalled:app.
func (s *Server) forgeLifecycle(c echo.Context) error {
	fr, cancel, err := s.verifyForge(c, s.d.Config.ForgeLifecycleModules)
	defer cancel()
	if err != nil {
		return err
	}
	ev, err := forge.ParseLifecycle(fr.event)
	if err != nil {
		return &httpError{status: http.StatusBadRequest, reason: "invalid lifecycle event", field: "body", err: err}
	}
	typ := ev.EventType
	switch typ {
	case "":
		// The documented bodies carry eventType; an endpoint that receives
		// installed only may see it without (UNCONFIRMED, forge/events.go).
		typ = forge.EventInstalled
	case forge.EventInstalled, forge.EventUpgraded, forge.EventUninstalled:
	default:
		return &httpError{status: http.StatusBadRequest, reason: "eventType is not a Forge lifecycle event (" + forge.EventInstalled +
			", " + forge.EventUpgraded + ")", field: "eventType"}
	}
	s.logMismatches(fr, ev)
	return s.recordForge(c, fr, typ, forge.LifecycleDedupeKey(fr.claims, typ))
}

// forgePreUninstall handles the preUninstall module: the uninstall is
// announced, the installation may still be called for a while.
func (s *Server) forgePreUninstall(c echo.Context) error {
	fr, cancel, err := s.verifyForge(c, s.d.Config.ForgePreUninstallModules)
	defer cancel()
	if err != nil {
		return err
	}
	if ev, err := forge.ParseLifecycle(fr.event); err == nil {
		s.logMismatches(fr, ev)
	}
	return s.recordForge(c, fr, tenant.ForgePreUninstall, forge.LifecycleDedupeKey(fr.claims, tenant.ForgePreUninstall))
}

// logMismatches logs where the body's identity differs from the token's; the
// token's is the one used.
func (s *Server) logMismatches(fr forgeRequest, ev forge.LifecycleEvent) {
	if m := ev.Mismatches(fr.claims); len(m) > 0 {
		s.d.Logger.WarnContext(fr.ctx, "forge body identity differs from the verified token; the token's is used",
			slog.String("installation_id", fr.claims.App.InstallationID), slog.Any("mismatches", m))
	}
}

// recordForge stores the delivery with its system token, queues the
// installation's initialization for installed and upgraded, and answers 204.
// A copy of a recorded delivery (Forge's retry, with a new token) enqueues
// the same task again, which the queue recognises by its TaskID: a retry
// after a failed enqueue still gets its task, and never a second one.
func (s *Server) recordForge(c echo.Context, fr forgeRequest, typ, dedupeKey string) error {
	ctx := fr.ctx
	res, err := s.d.Forge.Store.RecordForge(ctx, tenant.ForgeEvent{
		Type: typ, DedupeKey: dedupeKey, Claims: fr.claims, IssuedAt: fr.claims.IssuedAt,
		SystemToken: systemToken(c.Request()), At: s.d.Now(),
	})
	if errors.Is(err, tenant.ErrInvalidPayload) {
		return &httpError{status: http.StatusBadRequest, reason: "invalid Forge delivery", field: forge.SystemTokenHeader, err: err}
	}
	if err != nil {
		return dependencyError("tenant store", err)
	}
	if res.Applied && (typ == forge.EventInstalled || typ == forge.EventUpgraded) {
		if _, err := s.d.Queue.Lifecycle(ctx, tasks.TypeForgeInit, fr.claims.App.InstallationID, res.EventID); err != nil {
			return dependencyError("task queue", err)
		}
	}
	s.d.Logger.InfoContext(ctx, "forge event accepted",
		slog.String("installation_id", fr.claims.App.InstallationID), slog.String("event", typ),
		slog.String("client_key", res.Installation.ClientKey), slog.Bool("duplicate", res.Duplicate),
		slog.Bool("applied", res.Applied), slog.Any("changes", res.Changes), slog.Int("retry_count", fr.retry.RetryCount),
		slog.Int64("event_id", res.EventID), slog.String("b3_trace_id", traceID(c.Request())))
	return c.NoContent(http.StatusNoContent)
}

// systemToken is the request's app system token. Atlassian documents the
// header's value bare; a "Bearer " prefix is tolerated (UNCONFIRMED either
// way, docs/forge.md).
func systemToken(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get(forge.SystemTokenHeader))
	if scheme, rest, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(rest)
	}
	return v
}

// forgeMigration handles the App Migration Platform's Forge events
// (avi:ecosystem.migration:*): verify, store the installation's claims and
// system token (the worker calls the Forge migration API with it), enqueue
// under the installation and a key derived from the event (a re-sent event
// finds its task), answer 204. The platform re-sends an event it did not see
// acknowledged.
func (s *Server) forgeMigration(c echo.Context) error {
	err := s.handleForgeMigration(c)
	if err != nil {
		s.errorHandler(err, c)
		s.d.Logger.WarnContext(c.Request().Context(), "forge migration event rejected",
			slog.Int("status", c.Response().Status), slog.String("reason", err.Error()))
	}
	s.webhookSLI.observe(c.Response().Status)
	return nil
}

func (s *Server) handleForgeMigration(c echo.Context) error {
	fr, cancel, err := s.verifyForge(c, s.d.Config.ForgeMigrationModules)
	defer cancel()
	if err != nil {
		return err
	}
	ev, err := migration.ParseForgeEvent(fr.event)
	if err != nil {
		s.d.Metrics.MigrationEvents.WithLabelValues("invalid", "rejected").Inc()
		return &httpError{status: http.StatusBadRequest, reason: "invalid Forge migration event", field: "body", err: err}
	}
	typeLabel := string(ev.Type)
	if !ev.Known() {
		typeLabel = "unknown"
	}
	ctx := fr.ctx
	if _, err := s.d.Forge.Store.RecordForge(ctx, tenant.ForgeEvent{
		Claims: fr.claims, IssuedAt: fr.claims.IssuedAt, SystemToken: systemToken(c.Request()), At: s.d.Now(),
	}); err != nil {
		if errors.Is(err, tenant.ErrInvalidPayload) {
			return &httpError{status: http.StatusBadRequest, reason: "invalid Forge delivery", field: forge.SystemTokenHeader, err: err}
		}
		return dependencyError("tenant store", err)
	}
	id := fr.claims.App.InstallationID
	key := ev.DedupeKey()
	dup, err := s.d.Queue.MigrationEvent(ctx, id, key, fr.event)
	if err != nil {
		return dependencyError("task queue", err)
	}
	result := "enqueued"
	if dup {
		result = "duplicate"
	}
	s.d.Metrics.MigrationEvents.WithLabelValues(typeLabel, result).Inc()
	s.d.Logger.InfoContext(ctx, "forge migration event accepted",
		slog.String("installation_id", id), slog.String("event_type", ev.ForgeType),
		slog.String("transfer_id", ev.TransferID), slog.String("dedupe_key", key), slog.Bool("duplicate", dup),
		slog.Int("retry_count", fr.retry.RetryCount), slog.String("b3_trace_id", traceID(c.Request())))
	return c.NoContent(http.StatusNoContent)
}

// traceID is Forge's x-b3-traceid, for finding a delivery in Atlassian's
// developer console; anything but 16 or 32 hex digits is dropped (it is
// logged, so a caller must not be able to write arbitrary text there).
func traceID(r *http.Request) string {
	v := r.Header.Get("X-B3-Traceid")
	if len(v) != 16 && len(v) != 32 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return ""
		}
	}
	return v
}
