package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/tasks"
)

// lifecycle wraps a lifecycle handler to count its outcome, and for installed the
// install-callback SLI exactly as Atlassian computes it (only 200/204 are good).
func (s *Server) lifecycle(event string, h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := h(c); err != nil {
			s.errorHandler(err, c)
			s.logRejected(c, event, err)
		}
		status := c.Response().Status
		s.d.Metrics.LifecycleCallbacks.WithLabelValues(event, outcome(status)).Inc()
		if event == "installed" {
			s.d.Metrics.InstallSLI.WithLabelValues(metrics.SLIResult(status)).Inc()
		}
		return nil
	}
}

func (s *Server) logRejected(c echo.Context, event string, err error) {
	s.d.Logger.WarnContext(c.Request().Context(), "lifecycle callback rejected",
		slog.String("event", event), slog.Int("status", c.Response().Status), slog.String("reason", err.Error()))
}

func outcome(status int) string {
	switch {
	case status >= 200 && status < 300:
		return "ok"
	case status == http.StatusBadRequest:
		return "bad_request"
	case status == http.StatusUnauthorized:
		return "unauthorized"
	case status == http.StatusForbidden:
		return "forbidden"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	case status == http.StatusServiceUnavailable:
		return "unavailable"
	default:
		return "http_" + strconv.Itoa(status)
	}
}

// installed handles the install callback: parse, verify the RS256 signed install
// (iss must equal the body's clientKey), upsert the tenant synchronously so the new
// secret is durable before the 2xx, then enqueue the slow initialization.
func (s *Server) installed(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	p, err := tenant.ParseInstallPayload(body)
	if err != nil {
		return fail(http.StatusBadRequest, "invalid install payload", err)
	}
	if p.EventType != "" && p.EventType != "installed" {
		return fail(http.StatusBadRequest, "eventType is not installed", nil)
	}
	if p.AppKey != s.d.Config.AppKey {
		// An install of another app (or a body meant for one) must never
		// become a tenant of this one.
		return &httpError{status: http.StatusBadRequest, reason: "key is not this app's key (CONNECT_APP_KEY)", field: "key",
			err: fmt.Errorf("install body key %q, want %q", truncate(p.AppKey, 64), s.d.Config.AppKey)}
	}
	ctx, cancel := budget(c)
	defer cancel()
	claims, err := s.d.Install.Verify(ctx, c.Request(), p.ClientKey, p.BaseURL)
	if err != nil {
		return authError(err)
	}
	if err := s.bindInstallToken(ctx, c, body, p.ClientKey, claims); err != nil {
		return err
	}
	now := s.d.Now()
	res, err := s.d.Tenants.Install(ctx, p, now, claims.IssuedAt)
	if errors.Is(err, tenant.ErrKeyEnvironmentMismatch) {
		// Verified with a key of another environment's key server than the
		// tenant's own (staging for a production tenant): not Atlassian's word
		// about this tenant.
		s.d.Logger.WarnContext(ctx, "install refused: the key environment of its baseUrl is not the tenant's",
			slog.String("client_key", p.ClientKey), slog.String("base_url", p.BaseURL),
			slog.String("key_env", connect.KeyEnvironment(p.BaseURL)), slog.String("kid", claims.KeyID))
		return fail(http.StatusUnauthorized, "unauthorized", err)
	}
	if err != nil {
		return dependencyError("tenant store", err)
	}
	if s.d.Secrets != nil {
		s.d.Secrets.Invalidate(p.ClientKey)
	}
	if _, err := s.d.Queue.Lifecycle(ctx, tasks.TypeTenantInit, p.ClientKey, res.EventID); err != nil {
		// The tenant is saved, but its initialization is not queued: answer 503
		// so Atlassian re-sends installed, which is an idempotent upsert and
		// enqueues again.
		return dependencyError("task queue", err)
	}
	s.d.Logger.InfoContext(ctx, "tenant installed",
		slog.String("client_key", p.ClientKey), slog.String("base_url", p.BaseURL),
		slog.Bool("created", res.Created), slog.Any("changes", res.Changes),
		slog.Any("linked_client_keys", res.LinkedClientKeys), slog.Int64("event_id", res.EventID))
	return c.NoContent(http.StatusNoContent)
}

// bindInstallToken refuses a verified signed install whose token already came
// with another body (InstallTokenGuard).
func (s *Server) bindInstallToken(ctx context.Context, c echo.Context, body []byte, clientKey string, claims *connect.Claims) error {
	if s.d.InstallTokens == nil {
		return nil
	}
	tok, err := connect.ExtractToken(c.Request())
	if err != nil {
		return authError(err)
	}
	err = s.d.InstallTokens.Bind(ctx, tok, body, claims.ExpiresAt.Add(s.d.Config.JWTLeeway))
	if errors.Is(err, ErrInstallTokenReplayed) {
		s.d.Logger.WarnContext(ctx, "install refused: its signed token was replayed with another body",
			slog.String("client_key", clientKey), slog.String("kid", claims.KeyID))
		return fail(http.StatusUnauthorized, "unauthorized", err)
	}
	if err != nil {
		return dependencyError("install token guard", err)
	}
	return nil
}

// lifecycleBody is the part of a non-installed lifecycle body the receiver reads.
// Nothing else in it is trusted or stored: only a verified installed may change
// a tenant's record.
type lifecycleBody struct {
	ClientKey string `json:"clientKey"`
	BaseURL   string `json:"baseUrl"`
	EventType string `json:"eventType"`
}

func parseLifecycleBody(b []byte, wantEvent string, requireIDs bool) (lifecycleBody, error) {
	var lb lifecycleBody
	if err := json.Unmarshal(b, &lb); err != nil {
		return lb, fail(http.StatusBadRequest, "body is not a JSON lifecycle payload", err)
	}
	if requireIDs && (lb.ClientKey == "" || lb.BaseURL == "") {
		return lb, fail(http.StatusBadRequest, "clientKey and baseUrl are required", nil)
	}
	if lb.EventType != "" && lb.EventType != wantEvent {
		return lb, fail(http.StatusBadRequest, "eventType is not "+wantEvent, nil)
	}
	return lb, nil
}

// uninstalled marks the tenant uninstalled and keeps its secret (a late disabled,
// or a re-install, must still verify). An uninstall of a tenant we never saw is
// answered 204: the signature proved it comes from Atlassian and there is nothing
// to do.
func (s *Server) uninstalled(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	lb, err := parseLifecycleBody(body, "uninstalled", true)
	if err != nil {
		return err
	}
	ctx, cancel := budget(c)
	defer cancel()
	claims, err := s.d.Install.Verify(ctx, c.Request(), lb.ClientKey, lb.BaseURL)
	if err != nil {
		return authError(err)
	}
	eventID, err := s.d.Tenants.Uninstall(ctx, lb.ClientKey, s.d.Now(), claims.IssuedAt)
	if errors.Is(err, tenant.ErrNotFound) {
		s.d.Logger.InfoContext(ctx, "uninstall for unknown tenant ignored", slog.String("client_key", lb.ClientKey))
		return c.NoContent(http.StatusNoContent)
	}
	if err != nil {
		return dependencyError("tenant store", err)
	}
	// Nothing else to do now: the uninstalled event, recorded with the change,
	// reaches the vendor through the event feed.
	s.d.Logger.InfoContext(ctx, "tenant uninstalled", slog.String("client_key", lb.ClientKey), slog.Int64("event_id", eventID))
	return c.NoContent(http.StatusNoContent)
}

// enabledOrDisabled handles enabled and disabled: HS256 with the tenant's current
// secret and a computed qsh. enabled enqueues the migration webhook
// registration; the event itself reaches the vendor through the event feed,
// recorded with the change.
func (s *Server) enabledOrDisabled(enabled bool) echo.HandlerFunc {
	event := "disabled"
	if enabled {
		event = "enabled"
	}
	return func(c echo.Context) error {
		body, claims, ctx, cancel, err := s.signedRequest(c)
		defer cancel()
		if err != nil {
			return err
		}
		lb, err := parseLifecycleBody(body, event, false)
		if err != nil {
			return err
		}
		if lb.ClientKey != "" && lb.ClientKey != claims.Issuer {
			return fail(http.StatusUnauthorized, "unauthorized", connect.ErrIssuerMismatch)
		}
		eventID, err := s.d.Tenants.SetEnabled(ctx, claims.Issuer, enabled, s.d.Now(), claims.IssuedAt)
		if errors.Is(err, tenant.ErrNotFound) {
			return fail(http.StatusUnauthorized, "unauthorized", connect.ErrUnknownIssuer)
		}
		if err != nil {
			return dependencyError("tenant store", err)
		}
		if enabled {
			if _, err := s.d.Queue.Lifecycle(ctx, tasks.TypeTenantEnabled, claims.Issuer, eventID); err != nil {
				return dependencyError("task queue", err)
			}
		}
		s.d.Logger.InfoContext(ctx, "tenant "+event, slog.String("client_key", claims.Issuer), slog.Int64("event_id", eventID))
		return c.NoContent(http.StatusNoContent)
	}
}

// truncate bounds a caller-supplied string quoted in a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
