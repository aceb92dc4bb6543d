// Package handlers is the receiver's HTTP side: the Echo application with the
// lifecycle callbacks, the App Migration Platform webhook, the descriptor, health,
// metrics and the guarded monitoring UI.
//
// Echo types stay inside this package (and the receiver's wiring), so moving to
// Echo v5 touches one package. The handlers are thin on purpose: authenticate,
// validate, persist only what must be durable before the 2xx (a verified install's
// secret), enqueue, answer. Everything slow happens in the worker.
//
// This package is not part of the module's API and may change.
package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/connect"
	callback "github.com/connectrelay/connectrelay/internal/budget"
	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

// Route paths, relative to CONNECT_BASE_URL. The descriptor is built from the same
// constants, so the app and its lifecycle paths can never disagree.
const (
	PathInstalled       = "/installed"
	PathUninstalled     = "/uninstalled"
	PathEnabled         = "/enabled"
	PathDisabled        = "/disabled"
	PathMigrationEvents = config.MigrationWebhookPath
	PathDescriptor      = "/atlassian-connect.json"
	PathHealth          = "/healthz"
	PathReady           = "/readyz"
	PathMetrics         = "/metrics"
	PathMonitoring      = "/monitoring"
)

// DefaultBodyLimit bounds every callback body. Real installed bodies are under
// 2 KiB and migration events under 4 KiB; 64 KiB leaves room for growth while an
// attacker cannot make us buffer much.
const DefaultBodyLimit = 64 << 10

// RequestBudget bounds everything a request does after its body is read: key
// fetch, secret lookup, Postgres writes and the enqueue share it. A hung
// dependency therefore yields a 503 within a second (the contract), far inside
// AMP's 5 s acknowledgement budget, whichever step it stalls.
//
// Time a lifecycle write spends waiting for a pooled Postgres connection or in
// its transaction while Postgres keeps committing other transactions is not
// counted against it, only against BusyBudget: a loaded but healthy Postgres
// answers 2xx a little later instead of 503 (see package internal/budget).
const RequestBudget = 950 * time.Millisecond

// BusyBudget is the longest a request may take after its body is read when
// Postgres is busy, not down: the answer budget plus its waits for a pooled
// connection. It stays well inside AMP's 5 s acknowledgement deadline.
const BusyBudget = 3 * time.Second

// TenantStore is what the lifecycle handlers need of the tenant repository.
type TenantStore interface {
	// Install, Uninstall and SetEnabled bind the delivery's token to its body
	// (tenant.Delivery): a copy of a recorded delivery changes nothing and
	// returns the first one's history row; the token with another body fails
	// with tenant.ErrTokenReused.
	Install(ctx context.Context, p tenant.InstallPayload, d tenant.Delivery) (tenant.InstallResult, error)
	Uninstall(ctx context.Context, clientKey string, d tenant.Delivery) (int64, error)
	KeyEnvironment(ctx context.Context, clientKey string) (string, error)
	SetEnabled(ctx context.Context, clientKey string, enabled bool, d tenant.Delivery) (int64, error)
}

// Queue is what the handlers need of the task queue. duplicate reports that the
// task was already enqueued (a re-delivery); an error means the queue is
// unavailable.
type Queue interface {
	Lifecycle(ctx context.Context, typ, clientKey string, eventID int64) (duplicate bool, err error)
	MigrationEvent(ctx context.Context, clientKey, dedupeKey string, body json.RawMessage) (duplicate bool, err error)
}

// InstallVerifier verifies the RS256 signed-install JWT of installed/uninstalled.
type InstallVerifier interface {
	Verify(ctx context.Context, r *http.Request, clientKey, productBaseURL string) (*connect.Claims, error)
}

// RequestVerifier verifies the HS256 JWT of every other product->app call.
type RequestVerifier interface {
	Verify(ctx context.Context, r *http.Request, policy connect.QSHPolicy) (*connect.Claims, error)
}

// SecretInvalidator drops a tenant's cached secret on every receiver replica
// after an install on this one stored a new secret (tenant.Invalidations); an
// error means the other replicas could not be told.
type SecretInvalidator interface {
	Invalidate(ctx context.Context, clientKey string) error
}

// ReplayGuard binds each lifecycle token to the body it first came with, until
// the token expires, before the callback changes anything (internal/replay):
// qsh does not cover bodies, so without it a captured token could be sent
// again with another body, also after its genuine delivery failed.
type ReplayGuard interface {
	// Bind wraps replay.ErrConflict for the same token with another body and
	// replay.ErrUnavailable when it cannot tell.
	Bind(ctx context.Context, token string, body []byte, until time.Time) error
}

// Check is one readiness probe: a dependency that must answer for the receiver to
// take traffic.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Deps are the receiver's collaborators; cmd/receiver builds them from Config.
type Deps struct {
	Config   config.Config
	Install  InstallVerifier
	Requests RequestVerifier
	Tenants  TenantStore
	Secrets  SecretInvalidator
	// Replay binds lifecycle tokens to their bodies. Required.
	Replay  ReplayGuard
	Queue   Queue
	Ready   []Check
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Monitoring is the asynq UI (asynqmon) rooted at /monitoring; it is mounted
	// on the internal listener only when Config.AdminToken is set.
	Monitoring http.Handler
	// API are the collaborators of the /v1 routes of the internal listener,
	// mounted only when Config.InternalToken is set.
	API APIDeps
	// Descriptor, when set, may add to the descriptor (modules, vendor, links)
	// before it is served. The lifecycle paths, signed-install flag and migration
	// webhook path are set afterwards, so they cannot be broken by it.
	Descriptor func(d map[string]any)
	// Forge are the collaborators of the /forge/* routes, required when
	// Config.ForgeAppID is set.
	Forge ForgeDeps
	// BodyLimit overrides DefaultBodyLimit when positive.
	BodyLimit int64
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is the receiver's HTTP application.
type Server struct {
	d          Deps
	echo       *echo.Echo
	internal   *echo.Echo
	descriptor []byte
	// webhookSLI and installSLI are the series of Metrics.WebhookSLI and
	// Metrics.InstallSLI.
	webhookSLI, installSLI sliCounters
}

// New builds the Echo application with every route of the contract.
func New(d Deps) (*Server, error) {
	switch {
	case d.Install == nil, d.Requests == nil, d.Tenants == nil, d.Replay == nil, d.Queue == nil, d.Metrics == nil:
		return nil, errors.New("handlers: Install, Requests, Tenants, Replay, Queue and Metrics are required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.BodyLimit <= 0 {
		d.BodyLimit = DefaultBodyLimit
	}
	s := &Server{d: d, webhookSLI: newSLICounters(d.Metrics.WebhookSLI), installSLI: newSLICounters(d.Metrics.InstallSLI)}
	desc, err := s.buildDescriptor()
	if err != nil {
		return nil, err
	}
	s.descriptor = desc

	e := newEcho(s)
	e.POST(PathInstalled, s.lifecycle("installed", s.installed))
	e.POST(PathUninstalled, s.lifecycle("uninstalled", s.uninstalled))
	e.POST(PathEnabled, s.lifecycle("enabled", s.enabledOrDisabled(true)))
	e.POST(PathDisabled, s.lifecycle("disabled", s.enabledOrDisabled(false)))
	e.POST(PathMigrationEvents, s.migrationEvent)
	if d.Config.ForgeAppID != "" {
		if err := s.mountForge(e); err != nil {
			return nil, err
		}
	}
	e.GET(PathDescriptor, s.serveDescriptor)
	e.GET(PathHealth, s.health)
	e.GET(PathReady, s.ready)
	s.echo = e

	in := newEcho(s)
	in.GET(PathMetrics, echo.WrapHandler(d.Metrics.Handler()))
	in.GET(PathHealth, s.health)
	if d.Config.AdminToken != "" && d.Monitoring != nil {
		in.Any(PathMonitoring, echo.WrapHandler(d.Monitoring), s.browserGuard, s.requireAdmin)
		in.Any(PathMonitoring+"/*", echo.WrapHandler(d.Monitoring), s.browserGuard, s.requireAdmin)
	}
	if d.Config.InternalToken != "" {
		api := d.API
		if api.Tenants == nil || api.Targets == nil || api.Hosts == nil || api.Uploads == nil || api.Data == nil || api.Results == nil {
			return nil, errors.New("handlers: the /v1 API needs every field of Deps.API")
		}
		v1 := in.Group("", s.apiAuth)
		v1.POST(PathV1Verify, s.apiVerify)
		v1.POST(PathV1Sign, s.apiSign)
		v1.GET(PathV1Tenants, s.apiTenants)
		v1.GET(PathV1Tenant, s.apiTenant)
		v1.GET(PathV1Data, s.apiData)
		v1.POST(PathV1Result, s.apiResult)
	}
	s.internal = in
	return s, nil
}

// newEcho returns an Echo application with the server's error handling,
// request observation and client address extraction.
func newEcho(s *Server) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.IPExtractor = ipExtractor(s.d.Config.TrustedProxies)
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.observe)
	return e
}

// ipExtractor decides the client address of a request (the logged remote_ip).
// With no trusted proxies it is the TCP peer: any client can write
// X-Forwarded-For and X-Real-IP. Otherwise X-Forwarded-For is read from the
// right, skipping the hops in the trusted ranges only (not Echo's default of
// every private, loopback and link-local address).
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// Internal is the internal listener's handler: /metrics, /monitoring and the
// /v1 API for the vendor's backend. Serve it on a private address only.
func (s *Server) Internal() http.Handler { return s.internal }

// ServeHTTP makes the Server an http.Handler, so it can run under any
// http.Server (the receiver's, or httptest in tests).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// httpError is what handlers return to answer with a status and a short reason;
// the reason goes to the log and, for 4xx, to the client. It never holds a token
// or a secret.
type httpError struct {
	status int
	reason string
	// field names the request field at fault, when one is.
	field string
	// bearer makes a 401 challenge for a bearer token (Forge) instead of a
	// Connect JWT.
	bearer bool
	err    error
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

func (e *httpError) Unwrap() error { return e.err }

func fail(status int, reason string, err error) error {
	return &httpError{status: status, reason: reason, err: err}
}

// errorHandler answers every error as small JSON. Unknown errors become 503, not
// 500: they come from our dependencies, never from the caller's input (input
// problems are classified as 4xx where they are found), and a 503 makes Atlassian
// retry.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, reason, field, bearer := http.StatusServiceUnavailable, "temporarily unavailable", "", false
	var he *httpError
	var ee *echo.HTTPError
	switch {
	case errors.As(err, &he):
		status, reason, field, bearer = he.status, he.reason, he.field, he.bearer
	case errors.As(err, &ee):
		status, reason = ee.Code, http.StatusText(ee.Code)
	default:
		s.d.Logger.ErrorContext(c.Request().Context(), "unclassified error", slog.String("route", c.Path()), slog.Any("error", err))
	}
	switch {
	case status == http.StatusUnauthorized && bearer:
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="forge"`)
	case status == http.StatusUnauthorized:
		c.Response().Header().Set("WWW-Authenticate", `JWT realm="`+s.d.Config.AppKey+`"`)
	}
	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	body := map[string]string{"error": reason}
	if field != "" {
		body["field"] = field
	}
	_ = c.JSON(status, body)
}

// observe logs every request (never its Authorization header or body) and records
// its latency per route template.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			s.errorHandler(err, c)
		}
		status := c.Response().Status
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		d := time.Since(start)
		s.d.Metrics.HTTPDuration.WithLabelValues(route, methodLabel(c.Request().Method), strconv.Itoa(status)).Observe(d.Seconds())
		attrs := []slog.Attr{
			slog.String("method", c.Request().Method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.String("remote_ip", c.RealIP()),
		}
		if err != nil {
			attrs = append(attrs, slog.String("reason", err.Error()))
		}
		if more, ok := c.Get(requestAttrsKey).([]slog.Attr); ok {
			attrs = append(attrs, more...)
		}
		level := slog.LevelInfo
		switch {
		case route == PathHealth || route == PathReady || route == PathMetrics:
			level = slog.LevelDebug
		case status >= 500:
			level = slog.LevelError
		case status >= 400:
			level = slog.LevelWarn
		}
		s.d.Logger.LogAttrs(c.Request().Context(), level, "http request", attrs...)
		return nil
	}
}

// requestAttrsKey keys the attributes a handler adds to its request's log line.
const requestAttrsKey = "connectrelay.log_attrs"

// annotate adds attrs to the "http request" line observe logs for c, so that a
// handler need not log a line of its own for what it did.
func annotate(c echo.Context, attrs ...slog.Attr) {
	prev, _ := c.Get(requestAttrsKey).([]slog.Attr)
	c.Set(requestAttrsKey, append(prev, attrs...))
}

// readBody reads the request body up to the limit: 413 beyond it, decided from
// Content-Length before reading when the client declared one.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > s.d.BodyLimit {
		return nil, fail(http.StatusRequestEntityTooLarge, "body too large", nil)
	}
	b, err := readLimited(r, s.d.BodyLimit)
	if errors.Is(err, errTooLarge) {
		return nil, fail(http.StatusRequestEntityTooLarge, "body too large", nil)
	}
	if err != nil {
		return nil, fail(http.StatusBadRequest, "could not read body", err)
	}
	return b, nil
}

// signedRequest reads the body of a product-to-app request and verifies its HS256
// JWT (computed qsh) under the request budget. The caller must call cancel; the
// context is the budget's.
func (s *Server) signedRequest(c echo.Context) (body []byte, claims *connect.Claims, ctx context.Context, cancel context.CancelFunc, err error) {
	if body, err = s.readBody(c); err != nil {
		return nil, nil, nil, func() {}, err
	}
	ctx, cancel = budget(c)
	if claims, err = s.d.Requests.Verify(ctx, c.Request(), connect.QSHComputed); err != nil {
		return nil, nil, ctx, cancel, authError(err)
	}
	return body, claims, ctx, cancel, nil
}

// authError turns a verification error into 401 (bad or missing credentials),
// 400 naming baseUrl (a product host the policy refuses) or 503 (the key
// server or the secret store could not be asked).
func authError(err error) error {
	switch connect.StatusCode(err) {
	case http.StatusServiceUnavailable:
		return fail(http.StatusServiceUnavailable, "authentication temporarily unavailable", err)
	case http.StatusBadRequest:
		return &httpError{status: http.StatusBadRequest, reason: "baseUrl is not an allowed product host", field: "baseUrl", err: err}
	}
	return fail(http.StatusUnauthorized, "unauthorized", err)
}

// dependencyError classifies a store or queue failure: always 503, so that
// Atlassian re-sends; the cause is logged.
func dependencyError(what string, err error) error {
	return fail(http.StatusServiceUnavailable, what+" temporarily unavailable", err)
}

// budget starts the request's deadline (RequestBudget, stretched to at most
// BusyBudget by waits for a busy Postgres pool); call it once the body is read, so a slow
// client uploading its body does not eat into the time of our dependencies.
func budget(c echo.Context) (context.Context, context.CancelFunc) {
	return callback.New(c.Request().Context(), RequestBudget, BusyBudget)
}

// methodLabel keeps the metric's method label to a fixed set: the method is the
// client's choice, and an anonymous client must not be able to create series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	default:
		return "OTHER"
	}
}
