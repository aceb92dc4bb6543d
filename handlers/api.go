package handlers

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
)

// Paths of the internal API, on the internal listener.
const (
	PathV1Verify   = "/v1/verify"
	PathV1Sign     = "/v1/sign"
	PathV1Tenants  = "/v1/tenants"
	PathV1Tenant   = "/v1/tenants/:clientKey"
	PathV1Data     = "/v1/migrations/:transferId/uploads/:s3Key/data"
	PathV1Result   = "/v1/migrations/:transferId/uploads/:s3Key/result"
	apiBodyLimit   = 16 << 10
	apiDataTimeout = 6 * time.Hour
)

// TenantReader is what the internal API reads of the tenant store.
type TenantReader interface {
	Get(ctx context.Context, clientKey string) (connectrelay.Tenant, error)
	Page(ctx context.Context, q tenant.Query) ([]connectrelay.Tenant, string, error)
	History(ctx context.Context, clientKey string, limit int) ([]tenant.Event, error)
}

// UploadReader finds an upload and its transfer.
type UploadReader interface {
	Upload(ctx context.Context, transferID, s3Key string) (connectrelay.Transfer, migration.Upload, error)
}

// DataOpener streams an upload's data from the product.
type DataOpener interface {
	OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error)
}

// ResultQueue enqueues the result the backend reports for an upload.
type ResultQueue interface {
	MigrationResult(ctx context.Context, ref migration.UploadRef, imported bool, message string) error
}

// APIDeps are the collaborators of the /v1 internal API, served only when
// Config.InternalToken is set.
type APIDeps struct {
	Tenants TenantReader
	Targets product.TargetSource
	Hosts   *connect.HostPolicy
	Uploads UploadReader
	Data    DataOpener
	Results ResultQueue
}

// apiAuth guards the /v1 routes with INTERNAL_TOKEN as a bearer token,
// compared in constant time over hashes.
func (s *Server) apiAuth(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(s.d.Config.InternalToken))
	return func(c echo.Context) error {
		h := c.Request().Header.Get("Authorization")
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			got := sha256.Sum256([]byte(strings.TrimSpace(h[7:])))
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
				c.Response().Header().Set("Cache-Control", "no-store")
				return next(c)
			}
		}
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="connectrelay internal API"`)
		return c.JSON(http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
	}
}

// apiError is a 4xx answer of the internal API naming the field at fault.
func apiError(status int, field, reason string) error {
	return &httpError{status: status, reason: reason, field: field}
}

// decodeAPI reads a JSON request body of at most apiBodyLimit bytes into v.
func decodeAPI(c echo.Context, v any) error {
	b, err := readLimited(c.Request(), apiBodyLimit)
	if errors.Is(err, errTooLarge) {
		return fail(http.StatusRequestEntityTooLarge, "body too large", nil)
	}
	if err != nil {
		return fail(http.StatusBadRequest, "could not read body", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(http.StatusBadRequest, "", "body is not the expected JSON object: "+err.Error())
	}
	return nil
}

// verifyRequest is the body of POST /v1/verify.
type verifyRequest struct {
	Method          string `json:"method"`
	URL             string `json:"url"`
	Authorization   string `json:"authorization"`
	AllowContextQSH bool   `json:"allowContextQsh"`
}

// verifyClaims are the verified claims /v1/verify answers.
type verifyClaims struct {
	Issuer    string          `json:"iss"`
	Subject   string          `json:"sub,omitempty"`
	Audience  []string        `json:"aud,omitempty"`
	IssuedAt  *time.Time      `json:"iat,omitempty"`
	ExpiresAt time.Time       `json:"exp"`
	QSH       string          `json:"qsh"`
	Context   json.RawMessage `json:"context,omitempty"`
}

// verifyReasons are the machine-readable reasons of a refused token.
var verifyReasons = []struct {
	err    error
	reason string
}{
	{connect.ErrMissingToken, "missing_token"},
	{connect.ErrMalformedToken, "malformed_token"},
	{connect.ErrBadAlgorithm, "bad_algorithm"},
	{connect.ErrMissingClaim, "missing_claim"},
	{connect.ErrUnknownIssuer, "unknown_issuer"},
	{connect.ErrBadSignature, "bad_signature"},
	{connect.ErrExpired, "expired"},
	{connect.ErrQSHMismatch, "qsh_mismatch"},
}

// apiVerify verifies a JWT the product sent to the vendor's backend, with the
// receiver's own verifier: 200 with the tenant and the claims, or 401 with a
// machine-readable reason.
func (s *Server) apiVerify(c echo.Context) error {
	var req verifyRequest
	if err := decodeAPI(c, &req); err != nil {
		return err
	}
	if req.Method == "" {
		return apiError(http.StatusBadRequest, "method", "method is required")
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return apiError(http.StatusBadRequest, "url", "url must be the absolute URL the product called")
	}
	ctx, cancel := budget(c)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, strings.ToUpper(req.Method), u.String(), nil)
	if err != nil {
		return apiError(http.StatusBadRequest, "method", "method is not an HTTP method")
	}
	if req.Authorization != "" {
		r.Header.Set("Authorization", req.Authorization)
	}
	policy := connect.QSHComputed
	if req.AllowContextQSH {
		policy = connect.QSHComputedOrContext
	}
	claims, err := s.d.Requests.Verify(ctx, r, policy)
	if err != nil {
		if connect.StatusCode(err) == http.StatusServiceUnavailable {
			return dependencyError("authentication", err)
		}
		reason := "invalid_token"
		for _, vr := range verifyReasons {
			if errors.Is(err, vr.err) {
				reason = vr.reason
				break
			}
		}
		s.d.Logger.InfoContext(ctx, "token refused by /v1/verify", slog.String("reason", reason), slog.String("error", err.Error()))
		return c.JSON(http.StatusUnauthorized, map[string]string{"error": "unauthorized", "reason": reason})
	}
	tn, err := s.d.API.Tenants.Get(ctx, claims.Issuer)
	if err != nil {
		return tenantError(err)
	}
	out := verifyClaims{Issuer: claims.Issuer, Subject: claims.Subject, Audience: claims.Audience, ExpiresAt: claims.ExpiresAt,
		QSH: claims.QSH, Context: claims.Context}
	if !claims.IssuedAt.IsZero() {
		out.IssuedAt = &claims.IssuedAt
	}
	return c.JSON(http.StatusOK, map[string]any{"tenant": tn, "claims": out})
}

// signRequest is the body of POST /v1/sign.
type signRequest struct {
	ClientKey string `json:"clientKey"`
	Method    string `json:"method"`
	URL       string `json:"url"`
}

// apiSign returns the Authorization header of a call to the tenant's product as
// the app. The URL must be on the tenant's stored baseUrl (a path is resolved
// against it); the secret never leaves the service.
func (s *Server) apiSign(c echo.Context) error {
	var req signRequest
	if err := decodeAPI(c, &req); err != nil {
		return err
	}
	switch {
	case req.ClientKey == "":
		return apiError(http.StatusBadRequest, "clientKey", "clientKey is required")
	case req.Method == "":
		return apiError(http.StatusBadRequest, "method", "method is required")
	case req.URL == "":
		return apiError(http.StatusBadRequest, "url", "url is required")
	}
	ctx, cancel := budget(c)
	defer cancel()
	target, err := s.d.API.Targets.Target(ctx, req.ClientKey)
	if err != nil {
		return tenantError(err)
	}
	base, err := s.d.API.Hosts.CheckBaseURL(target.BaseURL)
	if err != nil {
		return apiError(http.StatusConflict, "clientKey", "the tenant's baseUrl is not an allowed product host")
	}
	u, err := signTarget(base, req.URL)
	if err != nil {
		return apiError(http.StatusBadRequest, "url", err.Error())
	}
	tok, err := connect.NewOutboundToken(strings.ToUpper(req.Method), u, base.String(), s.d.Config.AppKey, target.Secret, s.d.Now())
	if err != nil {
		return apiError(http.StatusBadRequest, "url", "cannot sign this request")
	}
	return c.JSON(http.StatusOK, map[string]string{"authorization": "JWT " + tok, "url": u.String()})
}

// signTarget resolves raw (absolute, or a path relative to base) and requires it
// on base's scheme, host and path.
func signTarget(base *url.URL, raw string) (*url.URL, error) {
	ref, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("url does not parse")
	}
	if !ref.IsAbs() {
		if !strings.HasPrefix(raw, "/") {
			return nil, errors.New("url must be absolute or start with /")
		}
		joined := *base
		joined.Path = strings.TrimSuffix(base.Path, "/") + ref.Path
		joined.RawPath = ""
		if ref.RawPath != "" {
			joined.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + ref.RawPath
		}
		joined.RawQuery = ref.RawQuery
		ref = &joined
	}
	bp := strings.TrimSuffix(base.EscapedPath(), "/")
	p := ref.EscapedPath()
	switch {
	case !strings.EqualFold(ref.Scheme, base.Scheme) || !strings.EqualFold(ref.Host, base.Host) || ref.User != nil:
		return nil, errors.New("url is not on the tenant's baseUrl")
	case bp != "" && p != bp && !strings.HasPrefix(p, bp+"/"):
		return nil, errors.New("url is not under the tenant's baseUrl")
	case ref.Fragment != "":
		return nil, errors.New("url must not have a fragment")
	}
	return ref, nil
}

// apiTenants lists tenants: ?state=installed|uninstalled|all (default all),
// ?license=active|inactive|unknown, ?after=<cursor>, ?limit=1..1000.
func (s *Server) apiTenants(c echo.Context) error {
	q := tenant.Query{IncludeForge: true}
	switch st := c.QueryParam("state"); st {
	case "", "all":
	case "installed", "uninstalled":
		v := st == "installed"
		q.Installed = &v
	default:
		return apiError(http.StatusBadRequest, "state", "state must be installed, uninstalled or all")
	}
	switch l := connectrelay.LicenseState(c.QueryParam("license")); l {
	case "", connectrelay.LicenseActive, connectrelay.LicenseInactive, connectrelay.LicenseUnknown:
		q.License = l
	default:
		return apiError(http.StatusBadRequest, "license", "license must be active, inactive or unknown")
	}
	q.After = c.QueryParam("after")
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return apiError(http.StatusBadRequest, "limit", "limit must be a whole number from 1 to 1000")
		}
		q.Limit = n
	}
	ctx, cancel := budget(c)
	defer cancel()
	page, next, err := s.d.API.Tenants.Page(ctx, q)
	if err != nil {
		return dependencyError("tenant store", err)
	}
	if page == nil {
		page = []connectrelay.Tenant{}
	}
	out := map[string]any{"tenants": page}
	if next != "" {
		out["next"] = next
	}
	return c.JSON(http.StatusOK, out)
}

// apiTenant answers one tenant, named by its clientKey or by a Forge
// installationId (a Connect-on-Forge tenant is one tenant under either name),
// with its recent history, the Forge deliveries of its installation included.
func (s *Server) apiTenant(c echo.Context) error {
	id := pathParam(c, "clientKey")
	ctx, cancel := budget(c)
	defer cancel()
	tn, err := s.d.API.Tenants.Get(ctx, id)
	if err != nil {
		return tenantError(err)
	}
	hist, err := s.d.API.Tenants.History(ctx, tn.ID(), 50)
	if err != nil {
		return tenantError(err)
	}
	type event struct {
		Type     string    `json:"type"`
		At       time.Time `json:"at"`
		Applied  bool      `json:"applied"`
		Changes  []string  `json:"changes"`
		IssuedAt time.Time `json:"issuedAt,omitzero"`
	}
	events := make([]event, len(hist))
	for i, h := range hist {
		events[i] = event{Type: h.Type, At: h.At, Applied: h.Applied, Changes: h.Changes, IssuedAt: h.IssuedAt}
	}
	return c.JSON(http.StatusOK, map[string]any{"tenant": tn, "history": events})
}

// pathParam is a route parameter, unescaped (an s3Key holds slashes, sent as
// %2F); a parameter that does not unescape is used as it came.
func pathParam(c echo.Context, name string) string {
	v := c.Param(name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// tenantError answers a tenant lookup failure: 404 for an unknown tenant, 503
// otherwise.
func tenantError(err error) error {
	if errors.Is(err, tenant.ErrNotFound) {
		return apiError(http.StatusNotFound, "clientKey", "no such tenant")
	}
	return dependencyError("tenant store", err)
}

// upload finds the upload named by the route.
func (s *Server) upload(ctx context.Context, c echo.Context) (connectrelay.Transfer, migration.Upload, error) {
	t, u, err := s.d.API.Uploads.Upload(ctx, pathParam(c, "transferId"), pathParam(c, "s3Key"))
	if errors.Is(err, migration.ErrUploadNotFound) {
		return t, u, apiError(http.StatusNotFound, "s3Key", "no such upload of this transfer")
	}
	if err != nil {
		return t, u, dependencyError("migration store", err)
	}
	return t, u, nil
}

// apiData streams an upload's data, through a fresh presigned URL from the
// product. It has no overall deadline beyond apiDataTimeout: files can be
// gigabytes; a stalled download is cut by the download's own watchdog.
func (s *Server) apiData(c echo.Context) error {
	lctx, lcancel := budget(c)
	t, _, err := s.upload(lctx, c)
	lcancel()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), apiDataTimeout)
	defer cancel()
	rc, err := s.d.API.Data.OpenData(ctx, t.ClientKey, pathParam(c, "s3Key"))
	switch {
	case errors.Is(err, product.ErrNotFound):
		return apiError(http.StatusNotFound, "s3Key", "the product has no data for this upload")
	case errors.Is(err, product.ErrTransferSettled), errors.Is(err, product.ErrTransferExpired):
		return apiError(http.StatusGone, "transferId", "the transfer is settled or expired")
	case err != nil:
		return dependencyError("product", err)
	}
	defer rc.Close()
	c.Response().Header().Set("Content-Type", "application/octet-stream")
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.Copy(c.Response(), rc); err != nil {
		s.d.Logger.WarnContext(ctx, "upload stream cut", slog.String("transfer_id", t.TransferID), slog.String("error", err.Error()))
	}
	return nil
}

// resultRequest is the body of POST .../result.
type resultRequest struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// apiResult records the result the backend reports for an upload it was handed
// (it answered 202 to migration.upload_ready): 202 once the result is queued.
func (s *Server) apiResult(c echo.Context) error {
	var req resultRequest
	if err := decodeAPI(c, &req); err != nil {
		return err
	}
	if req.Status != "imported" && req.Status != "failed" {
		return apiError(http.StatusBadRequest, "status", `status must be "imported" or "failed"`)
	}
	if len(req.Message) > 1000 {
		return apiError(http.StatusBadRequest, "message", "message is longer than 1000 bytes")
	}
	ctx, cancel := budget(c)
	defer cancel()
	t, u, err := s.upload(ctx, c)
	if err != nil {
		return err
	}
	// importing too: a backend may report as soon as it answered 202, before
	// the worker has recorded the hand-over; the queued result waits for it.
	switch u.State {
	case migration.UploadPending, migration.UploadImporting, migration.UploadImported, migration.UploadFailed:
	default:
		return apiError(http.StatusConflict, "s3Key", "the upload is not waiting for a result (state "+string(u.State)+")")
	}
	ref := migration.UploadRef{ClientKey: t.ClientKey, TransferID: t.TransferID, S3Key: u.S3Key, Label: u.Label}
	if err := s.d.API.Results.MigrationResult(ctx, ref, req.Status == "imported", req.Message); err != nil {
		return dependencyError("task queue", err)
	}
	return c.JSON(http.StatusAccepted, map[string]string{"status": "queued"})
}
