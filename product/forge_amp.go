package product

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/connectrelay/connectrelay/forge"
)

// This file holds every wire shape of the Forge migration REST API
// (https://developer.atlassian.com/platform/app-migration/apis/forge/rest-api/),
// so that a detail the documentation leaves open is corrected here only. The
// event side is internal/migration/forge_event.go. UNCONFIRMED:
//
//   - authentication: "Authorization: Bearer <app system token>" on the host
//     of the installation's apiBaseUrl; Atlassian's reference pages carry the
//     boilerplate "Forge and OAuth2 apps cannot access this REST resource";
//   - data/{transferId}/all (the upload list, [{key, label}]) appears in a
//     generated client of the API, not on Atlassian's page; it is marked
//     deprecated there in favour of a paginated data/{transferId}/page;
//   - data/{s3Key} answering {"url": <presigned URL>} like Connect's (the
//     client types it as a string map); data/{s3Key}/payload, which streams
//     the data through api.atlassian.com with the token, is not used;
//   - the mapping page's shape and largest size, taken to be Connect's
//     ({items, meta{hasNext, lastEntity}}) with the generated client's
//     default of 1200;
//   - log/{transferId} taking {"message": ...} of at most 65536 characters
//     (the limit of the Forge addLog call);
//   - 409 as the answer to every call for a settled transfer (Atlassian's FAQ
//     says the body "will generally contain" "already in a settled state");
//   - there is no progress, settle, error-details or feedback call on Forge:
//     the platform settles the transfer itself once every message has a
//     status, so ReportProgress only logs, ErrorDetails answers null and
//     Feedback is ErrNotSupported.
const (
	forgeAMPBase = "/app/migration/forge/v1"

	// Routes of the Forge migration API, as reported to Config.Observe and
	// in errors.
	RouteForgeData          = forgeAMPBase + "/data/{s3Key}"
	RouteForgeListData      = forgeAMPBase + "/data/{transferId}/all"
	RouteForgeMessageStatus = forgeAMPBase + "/message/{transferId}/status"
	RouteForgeLog           = forgeAMPBase + "/log/{transferId}"
	RouteForgeMappingPage   = forgeAMPBase + "/mapping/{transferId}/page"
	RouteForgeMappingFind   = forgeAMPBase + "/mapping/{transferId}/find"

	// forgeMaxPageSize is the largest mapping page asked of Forge.
	forgeMaxPageSize = 1200
	// forgeMaxLog bounds a log message (the addLog limit).
	forgeMaxLog = 65536
	// forgeMaxMessageIDs bounds the messageIds of one status call; more are
	// sent in several calls.
	forgeMaxMessageIDs = 100
)

// Message statuses of the Forge message status call.
const (
	MessageSuccess = "SUCCESS"
	MessageFailed  = "FAILED"
)

var (
	// ErrNoSystemToken means no usable app system token is stored for the
	// Forge installation: none was ever received, it has expired, or the
	// platform refused it (401). It is transient: every Forge event brings a
	// fresh token, so the task is retried with backoff.
	ErrNoSystemToken = errors.New("product: no usable Forge system token")
	// ErrNotSupported means the platform has no such call (Feedback on Forge).
	ErrNotSupported = errors.New("product: not supported by the platform")
)

// forgeTokenMargin is how long before its expiry a system token stops being
// used: a call started with it must not outlive it.
const forgeTokenMargin = time.Minute

// ForgeCredentials is what a Forge installation's calls need: the API base
// URL from its verified invocation token and its app system token.
type ForgeCredentials struct {
	// APIBaseURL is the token's app.apiBaseUrl, e.g.
	// https://api.atlassian.com/ex/jira/<cloudId>; only its scheme and host
	// are used.
	APIBaseURL string
	// Token is the app system token (x-forge-oauth-system). It is a
	// credential: never log it.
	Token string
	// ExpiresAt is when Token expires; zero when unknown, in which case the
	// token is used until the platform refuses it.
	ExpiresAt time.Time
}

// ForgeCredentialSource resolves a Forge installation (its installation ARI)
// to its current credentials. The tenant store implements it; it returns an
// error wrapping ErrNoSystemToken when it holds no token for the
// installation, and must not cache the token across Forge events, which
// bring fresh ones.
type ForgeCredentialSource interface {
	ForgeCredentials(ctx context.Context, installationID string) (ForgeCredentials, error)
}

// ForgeAMPConfig configures a ForgeAMP.
type ForgeAMPConfig struct {
	// Credentials resolves installations. Required.
	Credentials ForgeCredentialSource
	// APIHosts are the hosts an installation's apiBaseUrl may name
	// (FORGE_API_HOSTS); default forge.DefaultAPIHost. The receiver checked
	// the token's apiBaseUrl against the same list; it is checked again here
	// before the token is sent. Only https is accepted, except that a
	// loopback host listed explicitly (127.0.0.1, ::1, localhost), as tests
	// do, is accepted over http on any port, and lets data downloads come
	// from loopback too.
	APIHosts []string
	// HTTP is the HTTP behaviour of the API calls (HTTPClient, timeouts,
	// retries, UserAgent, Logger, Observe), as for New; AppKey and Hosts are
	// not used.
	HTTP Config
	// Download fetches the presigned data URLs, as NewAMP's download.
	Download *http.Client
}

// ForgeAMP calls the Forge migration API (App Migration Platform for Forge
// apps) for any Forge installation, named by its installation ARI where the
// Connect client takes a clientKey. It is safe for concurrent use.
type ForgeAMP struct {
	p     *Client
	creds ForgeCredentialSource
	hosts []string
	*downloader
}

// NewForgeAMP returns a ForgeAMP. It fails on a missing credential source,
// an empty or unusable host list, or HTTP settings New would refuse.
func NewForgeAMP(cfg ForgeAMPConfig, opts ...AMPOption) (*ForgeAMP, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("product: NewForgeAMP: a ForgeCredentialSource is required")
	}
	hosts := cfg.APIHosts
	if len(hosts) == 0 {
		hosts = []string{forge.DefaultAPIHost}
	}
	norm := make([]string, 0, len(hosts))
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, "/:@*") && !slices.Contains(loopbackHosts, h) {
			return nil, fmt.Errorf("product: NewForgeAMP: API host %q is not a host name", h)
		}
		norm = append(norm, h)
	}
	p, err := newClient(cfg.HTTP)
	if err != nil {
		return nil, err
	}
	loopback := slices.ContainsFunc(norm, func(h string) bool { return slices.Contains(loopbackHosts, h) })
	c := &ForgeAMP{p: p, creds: cfg.Credentials, hosts: norm, downloader: newDownloader(cfg.Download, loopback, opts)}
	p.resolve = c.endpoint
	return c, nil
}

// endpoint resolves an installation to the API host of its apiBaseUrl and a
// bearer system token.
func (c *ForgeAMP) endpoint(ctx context.Context, installationID string) (endpoint, error) {
	if !forge.IsInstallationID(installationID) {
		return endpoint{}, fmt.Errorf("%w: %q is not a Forge installation ARI", ErrInvalidArgument, installationID)
	}
	cr, err := c.creds.ForgeCredentials(ctx, installationID)
	if err != nil {
		return endpoint{}, fmt.Errorf("load Forge installation %s: %w", installationID, err)
	}
	if cr.Token == "" {
		return endpoint{}, fmt.Errorf("forge installation %s: %w: none stored", installationID, ErrNoSystemToken)
	}
	if !cr.ExpiresAt.IsZero() && time.Until(cr.ExpiresAt) < forgeTokenMargin {
		return endpoint{}, fmt.Errorf("forge installation %s: %w: it expired at %s", installationID, ErrNoSystemToken,
			cr.ExpiresAt.UTC().Format(time.RFC3339))
	}
	base, err := c.checkAPIBaseURL(cr.APIBaseURL)
	if err != nil {
		return endpoint{}, fmt.Errorf("forge installation %s: %w", installationID, err)
	}
	token := cr.Token
	return endpoint{base: base, authorize: func(req *http.Request) (string, error) {
		req.Header.Set("Authorization", "Bearer "+token)
		return token, nil
	}}, nil
}

// checkAPIBaseURL returns the origin (scheme and host) of an apiBaseUrl whose
// host is one of the API hosts; see ForgeAMPConfig.APIHosts.
func (c *ForgeAMP) checkAPIBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("%w: apiBaseUrl %q is not an absolute URL", ErrHostNotAllowed, raw)
	}
	host := strings.ToLower(u.Hostname())
	if !slices.Contains(c.hosts, host) {
		return nil, fmt.Errorf("%w: apiBaseUrl host %q is not in FORGE_API_HOSTS", ErrHostNotAllowed, host)
	}
	loopback := slices.Contains(loopbackHosts, host)
	switch {
	case u.Scheme == "https" && (u.Port() == "" || u.Port() == "443" || loopback):
	case u.Scheme == "http" && loopback:
	default:
		return nil, fmt.Errorf("%w: apiBaseUrl %s://%s must be https on the default port", ErrHostNotAllowed, u.Scheme, u.Host)
	}
	h := host
	if u.Port() != "" {
		h = net.JoinHostPort(host, u.Port())
	}
	return &url.URL{Scheme: u.Scheme, Host: h}, nil
}

// forgeSettled reports whether err is the platform's answer for a settled
// transfer: 409 on Forge.
func forgeSettled(err error) bool {
	se, ok := errors.AsType[*StatusError](err)
	return ok && se.StatusCode == http.StatusConflict
}

// forgeErr wraps a failed Forge call of a transfer: a 409 adds
// ErrTransferSettled.
func forgeErr(op, transferID string, err error) error {
	return wrapTransfer(op, transferID, err, forgeSettled(err))
}

// do is Client.Do for an installation, except that a 401 is reported as
// ErrNoSystemToken (the token was refused; the next Forge event brings
// another, so the call is worth a retry later), not as the final
// ErrUnauthorized.
func (c *ForgeAMP) do(ctx context.Context, installationID string, req Request, out any) error {
	err := c.p.Do(ctx, installationID, req, out)
	if se, ok := errors.AsType[*StatusError](err); ok && se.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("%w: the platform refused it: %v", ErrNoSystemToken, err)
	}
	return err
}

// Do calls the product as the installation, with its app system token:
// req.Path is relative to the origin of the installation's apiBaseUrl, so it
// starts with the apiBaseUrl's own path (/ex/jira/<cloudId>/rest/api/3/...).
// Errors are Client.Do's, except that a 401 wraps ErrNoSystemToken.
func (c *ForgeAMP) Do(ctx context.Context, installationID string, req Request, out any) error {
	return c.do(ctx, installationID, req, out)
}

// forgePath is forgeAMPBase followed by the escaped segments.
func forgePath(segments ...string) string {
	var b strings.Builder
	b.WriteString(forgeAMPBase)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// DataURL asks the platform for a presigned URL of an uploaded file (its
// key). The URL is a bearer credential: never log it.
func (c *ForgeAMP) DataURL(ctx context.Context, installationID, s3Key string) (string, error) {
	if err := requireArg("key", s3Key); err != nil {
		return "", err
	}
	var out struct {
		URL string `json:"url"`
	}
	req := Request{Path: forgePath("data", s3Key), Route: RouteForgeData}
	if err := c.do(ctx, installationID, req, &out); err != nil {
		if forgeSettled(err) {
			return "", fmt.Errorf("data URL of upload %q: %w: %w", s3Key, ErrTransferSettled, err)
		}
		return "", fmt.Errorf("data URL of upload %q: %w", s3Key, err)
	}
	if _, err := c.checkDataURL(out.URL); err != nil {
		return "", fmt.Errorf("data URL of upload %q: %w", s3Key, err)
	}
	return out.URL, nil
}

// OpenData streams an uploaded file as AMP.OpenData does: the presigned URL
// from DataURL, fetched without any credential of ours by the SSRF-safe
// download client, asked for again once if it expired.
func (c *ForgeAMP) OpenData(ctx context.Context, installationID, s3Key string) (io.ReadCloser, error) {
	return c.openData(ctx, installationID, s3Key, c.DataURL)
}

// ListData lists the files uploaded for a transfer so far.
func (c *ForgeAMP) ListData(ctx context.Context, installationID, transferID string) ([]Upload, error) {
	if err := requireArg("transferId", transferID); err != nil {
		return nil, err
	}
	var out []struct {
		Key   string `json:"key"`
		S3Key string `json:"s3Key"`
		Label string `json:"label"`
	}
	req := Request{Path: forgePath("data", transferID, "all"), Route: RouteForgeListData}
	if err := c.do(ctx, installationID, req, &out); err != nil {
		return nil, forgeErr("list data", transferID, err)
	}
	ups := make([]Upload, 0, len(out))
	for _, u := range out {
		k := u.Key
		if k == "" {
			k = u.S3Key
		}
		ups = append(ups, Upload{S3Key: k, Label: u.Label})
	}
	return ups, nil
}

// AcknowledgeMessages sets the status (MessageSuccess or MessageFailed) of
// the transfer's messages, as the platform requires within 15 minutes of
// each uploaded:app_data event. More than forgeMaxMessageIDs IDs are sent in
// several calls; repeating a call is harmless. A 409 (the transfer is
// settled) wraps ErrTransferSettled and is final.
func (c *ForgeAMP) AcknowledgeMessages(ctx context.Context, installationID, transferID, status string, messageIDs []string) error {
	if err := requireArg("transferId", transferID); err != nil {
		return err
	}
	if status != MessageSuccess && status != MessageFailed {
		return fmt.Errorf("%w: message status %q", ErrInvalidArgument, status)
	}
	if len(messageIDs) == 0 {
		return fmt.Errorf("%w: no messageIds", ErrInvalidArgument)
	}
	for batch := range slices.Chunk(messageIDs, forgeMaxMessageIDs) {
		body := struct {
			Status     string   `json:"status"`
			MessageIDs []string `json:"messageIds"`
		}{status, batch}
		req := Request{Method: http.MethodPost, Path: forgePath("message", transferID, "status"), Body: body, Route: RouteForgeMessageStatus}
		if err := c.do(ctx, installationID, req, nil); err != nil {
			return forgeErr("message status "+status, transferID, err)
		}
	}
	return nil
}

// Log adds a message to the transfer's progress log, which the admin sees in
// the migration assistant; a message over 65536 characters is cut.
func (c *ForgeAMP) Log(ctx context.Context, installationID, transferID, message string) error {
	if err := requireArg("transferId", transferID); err != nil {
		return err
	}
	if err := requireArg("message", message); err != nil {
		return err
	}
	body := struct {
		Message string `json:"message"`
	}{truncate(message, forgeMaxLog)}
	req := Request{Method: http.MethodPost, Path: forgePath("log", transferID), Body: body, Route: RouteForgeLog}
	if err := c.do(ctx, installationID, req, nil); err != nil {
		return forgeErr("log", transferID, err)
	}
	return nil
}

// ReportProgress records a progress report or a settlement in the transfer's
// progress log: Forge has no progress call, the platform computes progress
// from the message statuses and settles the transfer itself, so a settle
// status here is informational. It refuses what AMP.ReportProgress refuses;
// a 409 wraps ErrTransferSettled (final).
func (c *ForgeAMP) ReportProgress(ctx context.Context, installationID, transferID string, p Progress) error {
	if err := p.validate(transferID); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s %d%%", p.Status, p.Percent)
	if p.Message != "" {
		msg += ": " + p.Message
	}
	return c.Log(ctx, installationID, transferID, msg)
}

// ErrorDetails answers JSON null: Forge has no call for what the server-side
// listener reported (the errored:listener event, recorded as received, is
// all there is).
func (c *ForgeAMP) ErrorDetails(ctx context.Context, installationID, transferID string) (json.RawMessage, error) {
	if err := requireArg("transferId", transferID); err != nil {
		return nil, err
	}
	return json.RawMessage("null"), nil
}

// Feedback returns ErrNotSupported: Forge has no feedback channel to the
// server app (Log writes to the admin's progress log instead).
func (c *ForgeAMP) Feedback(ctx context.Context, installationID, transferID string, details any) error {
	return fmt.Errorf("feedback of transfer %s: %w: Forge has no feedback API", transferID, ErrNotSupported)
}

// Mappings iterates over the mappings of a namespace as AMP.Mappings does;
// pages hold at most 1200 mappings.
func (c *ForgeAMP) Mappings(ctx context.Context, installationID, transferID, namespace string, pageSize int) iter.Seq2[Mapping, error] {
	return mappings(ctx, c.do, installationID, transferID, namespace, pageSize, forgeMaxPageSize,
		forgePath("mapping", transferID, "page"), RouteForgeMappingPage, forgeErr)
}

// FindMappings looks up the cloud IDs of specific server keys as
// AMP.FindMappings does.
func (c *ForgeAMP) FindMappings(ctx context.Context, installationID, transferID, namespace string, keys []string) (map[string]string, error) {
	return findMappings(ctx, c.do, installationID, transferID, namespace, keys,
		forgePath("mapping", transferID, "find"), RouteForgeMappingFind, forgeErr)
}
