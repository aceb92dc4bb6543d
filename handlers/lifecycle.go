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
	"github.com/connectrelay/connectrelay/internal/replay"
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
			s.installSLI.observe(status)
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
	d, err := s.delivery(ctx, c, body, claims)
	if err != nil {
		return err
	}
	res, err := s.d.Tenants.Install(ctx, p, d)
	if errors.Is(err, tenant.ErrTokenReused) {
		return fail(http.StatusUnauthorized, "unauthorized", err)
	}
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
	// What follows the commit runs on every install, a copy (res.Copy) too:
	// the first may have failed here and been answered 503, and its retry,
	// under the same token or a new one, cannot tell what it left undone.
	if s.d.Secrets != nil {
		// After the commit, so no replica reloads the old secret. Failing that,
		// 503: the retry (a copy) announces it again.
		if err := s.d.Secrets.Invalidate(ctx, p.ClientKey); err != nil {
			return dependencyError("secret invalidation", err)
		}
	}
	if _, err := s.d.Queue.Lifecycle(ctx, tasks.TypeTenantInit, p.ClientKey, res.EventID); err != nil {
		// The tenant is saved, but its initialization is not queued: answer 503
		// so Atlassian re-sends installed, a copy that enqueues again (the
		// TaskID of its history row makes a second enqueue harmless).
		return dependencyError("task queue", err)
	}
	annotate(c, slog.String("client_key", p.ClientKey), slog.String("base_url", p.BaseURL),
		slog.Bool("created", res.Created), slog.Bool("copy", res.Copy), slog.Any("changes", res.Changes),
		slog.Any("linked_client_keys", res.LinkedClientKeys), slog.Int64("event_id", res.EventID))
	return c.NoContent(http.StatusNoContent)
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
	// Verified with a key of another environment's key server than the
	// tenant's own (a staging key for a production tenant): not Atlassian's
	// word about this tenant, as for installed.
	env, err := s.d.Tenants.KeyEnvironment(ctx, lb.ClientKey)
	switch {
	case errors.Is(err, tenant.ErrNotFound):
	case err != nil:
		return dependencyError("tenant store", err)
	case env != connect.KeyEnvironment(lb.BaseURL):
		s.d.Logger.WarnContext(ctx, "uninstall refused: the key environment of its baseUrl is not the tenant's",
			slog.String("client_key", lb.ClientKey), slog.String("base_url", lb.BaseURL),
			slog.String("key_env", connect.KeyEnvironment(lb.BaseURL)), slog.String("tenant_key_env", env), slog.String("kid", claims.KeyID))
		return fail(http.StatusUnauthorized, "unauthorized", tenant.ErrKeyEnvironmentMismatch)
	}
	d, err := s.delivery(ctx, c, body, claims)
	if err != nil {
		return err
	}
	eventID, err := s.d.Tenants.Uninstall(ctx, lb.ClientKey, d)
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		s.d.Logger.InfoContext(ctx, "uninstall for unknown tenant ignored", slog.String("client_key", lb.ClientKey))
		return c.NoContent(http.StatusNoContent)
	case errors.Is(err, tenant.ErrTokenReused):
		return fail(http.StatusUnauthorized, "unauthorized", err)
	case err != nil:
		return dependencyError("tenant store", err)
	}
	// Nothing else to do now: the uninstalled event, recorded with the change,
	// reaches the vendor through the event feed.
	annotate(c, slog.String("client_key", lb.ClientKey), slog.Int64("event_id", eventID))
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
		d, err := s.delivery(ctx, c, body, claims)
		if err != nil {
			return err
		}
		eventID, err := s.d.Tenants.SetEnabled(ctx, claims.Issuer, enabled, d)
		switch {
		case errors.Is(err, tenant.ErrNotFound):
			return fail(http.StatusUnauthorized, "unauthorized", connect.ErrUnknownIssuer)
		case errors.Is(err, tenant.ErrTokenReused):
			return fail(http.StatusUnauthorized, "unauthorized", err)
		case err != nil:
			return dependencyError("tenant store", err)
		}
		// For a copy of a recorded delivery too (eventID is the first's): the
		// first may have been answered 503 after its commit.
		if enabled {
			if _, err := s.d.Queue.Lifecycle(ctx, tasks.TypeTenantEnabled, claims.Issuer, eventID); err != nil {
				return dependencyError("task queue", err)
			}
		}
		annotate(c, slog.String("client_key", claims.Issuer), slog.Int64("event_id", eventID))
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

// delivery binds the verified lifecycle request's token to body until its exp
// plus the leeway (ReplayGuard), before anything changes: the same token with
// another body is refused (401), also after this delivery failed, and when the
// binding cannot be made the request is not accepted unchecked (503). The
// Delivery it returns has the tenant store record the token with the change,
// which tells a copy of a recorded delivery (tenant.Delivery).
func (s *Server) delivery(ctx context.Context, c echo.Context, body []byte, claims *connect.Claims) (tenant.Delivery, error) {
	raw, err := connect.ExtractToken(c.Request())
	if err != nil {
		return tenant.Delivery{}, authError(err)
	}
	leeway := s.d.Config.JWTLeeway
	if leeway == 0 {
		leeway = connect.DefaultLeeway // what the verifiers apply for zero
	}
	switch err := s.d.Replay.Bind(ctx, raw, body, claims.ExpiresAt.Add(leeway)); {
	case errors.Is(err, replay.ErrConflict):
		return tenant.Delivery{}, fail(http.StatusUnauthorized, "unauthorized", err)
	case err != nil:
		return tenant.Delivery{}, dependencyError("replay cache", err)
	}
	return tenant.Delivery{At: s.d.Now(), IssuedAt: claims.IssuedAt, Token: raw, Body: body}, nil
}
