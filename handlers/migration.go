package handlers

import (
	"log/slog"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
)

// migrationEvent is the App Migration Platform webhook. AMP re-sends any event
// not acknowledged with 200 within 5 s, so the handler only authenticates,
// validates and enqueues under a deterministic TaskID; a re-sent event finds its
// task already there and is acknowledged again.
func (s *Server) migrationEvent(c echo.Context) error {
	if err := s.handleMigrationEvent(c); err != nil {
		s.errorHandler(err, c)
		s.d.Logger.WarnContext(c.Request().Context(), "migration event rejected",
			slog.Int("status", c.Response().Status), slog.String("reason", err.Error()))
	}
	s.webhookSLI.observe(c.Response().Status)
	return nil
}

// sliCounters are the two series of an SLI counter vector (metrics.SLIResult),
// resolved once so that a request does not look its series up by label.
type sliCounters struct{ good, bad prometheus.Counter }

func newSLICounters(v *prometheus.CounterVec) sliCounters {
	return sliCounters{good: v.WithLabelValues("good"), bad: v.WithLabelValues("bad")}
}

// observe counts one answer with status under its SLI result.
func (c sliCounters) observe(status int) {
	if metrics.SLIResult(status) == "good" {
		c.good.Inc()
		return
	}
	c.bad.Inc()
}

func (s *Server) handleMigrationEvent(c echo.Context) error {
	body, claims, ctx, cancel, err := s.signedRequest(c)
	defer cancel()
	if err != nil {
		return err
	}
	ev, err := migration.ParseEvent(body)
	if err != nil {
		s.d.Metrics.MigrationEvents.WithLabelValues("invalid", "rejected").Inc()
		return fail(http.StatusBadRequest, "invalid migration event", err)
	}
	typeLabel := string(ev.Type)
	if !ev.Known() {
		typeLabel = "unknown"
	}
	// The signing tenant must be a party of the migration: a tenant's valid
	// token must never inject events into another tenant's transfer. An event
	// of a type we do not know that names no tenant is only recorded (under
	// the signer), so it is let through.
	if keys := ev.ClientKeys(); (ev.Known() || len(keys) > 0) && !slices.Contains(keys, claims.Issuer) {
		s.d.Metrics.MigrationEvents.WithLabelValues(typeLabel, "rejected").Inc()
		return fail(http.StatusForbidden, "event does not belong to the signing tenant", nil)
	}
	key := ev.DedupeKey()
	dup, err := s.d.Queue.MigrationEvent(ctx, claims.Issuer, key, body)
	if err != nil {
		return dependencyError("task queue", err)
	}
	result := "enqueued"
	if dup {
		result = "duplicate"
	}
	s.d.Metrics.MigrationEvents.WithLabelValues(typeLabel, result).Inc()
	// On the request's own log line, not one more: this route is the
	// receiver's hottest, and a JSON line costs as much as the HMAC.
	annotate(c, slog.String("client_key", claims.Issuer), slog.String("event_type", string(ev.Type)),
		slog.String("transfer_id", ev.TransferID), slog.String("dedupe_key", key), slog.Bool("duplicate", dup))
	return c.NoContent(http.StatusOK)
}
