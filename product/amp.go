package product

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ampBase is the migration API's path below the tenant baseUrl.
const ampBase = "/rest/atlassian-connect/1/migration"

// Routes of the migration API, as reported to Config.Observe and in
// errors: templates, so that metrics stay low-cardinality.
const (
	RouteData        = ampBase + "/data/{s3Key}"
	RouteListData    = ampBase + "/data/{transferId}/all"
	RouteProgress    = ampBase + "/progress/{transferId}"
	RouteError       = ampBase + "/error/{transferId}"
	RouteFeedback    = ampBase + "/feedback/{transferId}"
	RouteMappingPage = ampBase + "/mapping/{transferId}/page"
	RouteMappingFind = ampBase + "/mapping/{transferId}/find"
	RouteWebhook     = ampBase + "/webhook"
)

// Progress statuses. IN_PROGRESS reports; the other three settle the
// transfer, after which every call for it answers 403 (ErrTransferSettled).
const (
	StatusInProgress = "IN_PROGRESS"
	StatusSuccess    = "SUCCESS"
	StatusIncomplete = "INCOMPLETE"
	StatusFailed     = "FAILED"
)

var (
	// ErrTransferSettled means the transfer was already settled (SUCCESS,
	// INCOMPLETE or FAILED), so the platform refuses further calls for it with
	// 403. It is final: the task should stop, not retry.
	ErrTransferSettled = errors.New("transfer already settled")
	// ErrTransferExpired means the platform no longer accepts progress for the
	// transfer: it answers 400 once 14 days have passed since the first
	// notification. ReportProgress validates its payload first, so a 400 for
	// a well-formed report is read as this. It is final.
	ErrTransferExpired = errors.New("transfer no longer accepts calls")
	// ErrInvalidArgument means a call was refused before any request was made
	// (empty identifiers, an unknown status, a relative webhook URL...).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrBadDataURL means the data API answered without a usable http(s) URL.
	ErrBadDataURL = errors.New("product answered an unusable data URL")
	// ErrDownloadFailed means the presigned URL answered something other than
	// 200 (after the one re-request an expired URL earns). See DownloadError.
	ErrDownloadFailed = errors.New("data download failed")
	// ErrDownloadStalled means the presigned URL sent no data (headers or
	// body) for the stall timeout. It is transient.
	ErrDownloadStalled = errors.New("data download stalled")
)

// DefaultStallTimeout is how long a download may go without receiving a
// byte before it is abandoned. Downloads have no overall deadline, because
// an app data file may be tens of gigabytes.
const DefaultStallTimeout = 2 * time.Minute

// AMP calls one app's migration API (App Migration Platform) on any tenant. It is safe for
// concurrent use.
type AMP struct {
	p *Client
	*downloader
}

// downloader fetches presigned data URLs: the SSRF-safe client, its stall
// timeout and its logger, shared by the Connect (AMP) and the Forge
// (ForgeAMP) clients.
type downloader struct {
	dl       *http.Client
	guard    addressGuard
	resolver *net.Resolver
	stall    time.Duration
	log      *slog.Logger
}

// AMPOption adjusts the data downloads of an AMP client built by NewAMP or
// of a ForgeAMP built by NewForgeAMP.
type AMPOption func(*downloader)

// WithStallTimeout sets how long a download may receive nothing before it is
// abandoned with ErrDownloadStalled (default DefaultStallTimeout).
func WithStallTimeout(d time.Duration) AMPOption {
	return func(c *downloader) {
		if d > 0 {
			c.stall = d
		}
	}
}

// WithLogger sets the logger for download re-requests (default slog.Default).
// Presigned URLs are credentials and are never logged.
func WithLogger(l *slog.Logger) AMPOption {
	return func(c *downloader) {
		if l != nil {
			c.log = l
		}
	}
}

// WithResolver sets the DNS resolver of the download client's dialer (default
// net.DefaultResolver). Whatever it answers, the address guard checks the
// address actually dialled.
func WithResolver(r *net.Resolver) AMPOption {
	return func(c *downloader) { c.resolver = r }
}

// New returns a Client calling the migration API through p and fetching
// presigned data URLs with download. download must not add credentials of
// its own and should not set http.Client.Timeout, which would cap the whole
// body of large files; if nil, a client with a 30 s response-header timeout,
// no overall timeout and no transparent decompression (the importer gets the
// bytes exactly as uploaded) is used. Unless download has its own
// CheckRedirect, storage redirects are followed at most 5 times, to https
// only.
//
// Data URLs must be https, and every connection of a download (redirects and
// DNS answers included) is checked at dial time: loopback, private,
// link-local (cloud metadata) and reserved addresses are refused with
// ErrAddressNotAllowed. Only when p's host policy (CONNECT_PRODUCT_HOSTS)
// explicitly lists a loopback host (127.0.0.1, ::1, localhost), as tests and
// local development do to play the product, may data come from loopback, over
// http too. download's Transport must be nil or an *http.Transport (it is
// cloned and given the guarded dialer, without proxy); any other RoundTripper
// cannot be guarded and every download fails.
func NewAMP(p *Client, download *http.Client, opts ...AMPOption) *AMP {
	return &AMP{p: p, downloader: newDownloader(download, allowsLoopback(p.cfg.Hosts), opts)}
}

// newDownloader builds the download client NewAMP documents; allowLoopback
// lets data come from loopback, over http too (tests).
func newDownloader(download *http.Client, allowLoopback bool, opts []AMPOption) *downloader {
	c := &downloader{stall: DefaultStallTimeout, log: slog.Default(), guard: addressGuard{allowLoopback: allowLoopback}}
	for _, o := range opts {
		o(c)
	}
	var dl http.Client
	var rt http.RoundTripper
	if download != nil {
		dl = *download
		rt = download.Transport
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 30 * time.Second
		tr.DisableCompression = true
		rt = tr
	}
	if tr, ok := c.guard.guardedTransport(rt, c.resolver); ok {
		dl.Transport = tr
	} else {
		dl.Transport = refusingTransport{}
	}
	if dl.CheckRedirect == nil {
		dl.CheckRedirect = c.checkDownloadRedirect
	}
	c.dl = &dl
	return c
}

// Upload is one file the server app uploaded for a transfer.
type Upload struct {
	Label string `json:"label"`
	S3Key string `json:"s3Key"`
}

// Progress is a transfer progress report or settlement.
type Progress struct {
	// Status is one of StatusInProgress, StatusSuccess, StatusIncomplete,
	// StatusFailed.
	Status string `json:"status"`
	// Percent is 0–100; the platform ignores a value lower than one already
	// reported.
	Percent int `json:"percent"`
	// Message is shown to the admin running the migration.
	Message string `json:"message"`
}

// Mapping is one server-to-cloud identifier mapping.
type Mapping struct {
	ServerID string
	CloudID  string
}

func requireArg(name, v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, name)
	}
	return nil
}

// transferErr wraps a failed transfer-scoped call. The platform answers 403
// "Transfer '…' is already in a settled state" to every call for a settled
// transfer (DAC FAQ); only such a 403 is reported as ErrTransferSettled (still
// wrapping ErrForbidden). Any other 403 (a permission problem, a
// disabled app) must not be taken for "settled": our own settle call would
// never be made and the transfer's data would be dropped.
func transferErr(op, transferID string, err error) error {
	return wrapTransfer(op, transferID, err, settledAnswer(err))
}

// wrapTransfer wraps the failed transfer-scoped call op, adding
// ErrTransferSettled when settled says the platform answered so.
func wrapTransfer(op, transferID string, err error, settled bool) error {
	if settled {
		return fmt.Errorf("%s of transfer %s: %w: %w", op, transferID, ErrTransferSettled, err)
	}
	return fmt.Errorf("%s of transfer %s: %w", op, transferID, err)
}

// settledAnswer reports whether err is the product's 403 for a settled transfer.
func settledAnswer(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusForbidden &&
		strings.Contains(strings.ToLower(se.Body), "settled")
}

// DataURL asks the product for a presigned URL of an uploaded file. The URL
// is a bearer credential valid for about an hour: never log it.
func (c *AMP) DataURL(ctx context.Context, clientKey, s3Key string) (string, error) {
	if err := requireArg("s3Key", s3Key); err != nil {
		return "", err
	}
	var out struct {
		URL string `json:"url"`
	}
	req := Request{Path: ampBase + "/data/" + url.PathEscape(s3Key), Route: RouteData}
	if err := c.p.Do(ctx, clientKey, req, &out); err != nil {
		if settledAnswer(err) {
			return "", fmt.Errorf("data URL of upload %q: %w: %w", s3Key, ErrTransferSettled, err)
		}
		return "", fmt.Errorf("data URL of upload %q: %w", s3Key, err)
	}
	if _, err := c.checkDataURL(out.URL); err != nil {
		return "", fmt.Errorf("data URL of upload %q: %w", s3Key, err)
	}
	return out.URL, nil
}

// checkDataURL accepts only absolute https URLs without userinfo (http only
// on loopback, when the host policy allows loopback); the addresses are
// checked when dialled.
func (c *downloader) checkDataURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty url", ErrBadDataURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: does not parse", ErrBadDataURL)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: scheme %q host %q", ErrBadDataURL, u.Scheme, u.Hostname())
	}
	if err := c.guard.checkScheme(u.Scheme, u.Hostname()); err != nil {
		return nil, err
	}
	return u, nil
}

// ListData lists the files uploaded for a transfer so far.
func (c *AMP) ListData(ctx context.Context, clientKey, transferID string) ([]Upload, error) {
	if err := requireArg("transferId", transferID); err != nil {
		return nil, err
	}
	var out []Upload
	req := Request{Path: ampBase + "/data/" + url.PathEscape(transferID) + "/all", Route: RouteListData}
	if err := c.p.Do(ctx, clientKey, req, &out); err != nil {
		if errors.Is(err, ErrBadRequest) {
			// A valid transfer id answered 400: past AMP's 14-day window.
			return nil, fmt.Errorf("list data of transfer %s: %w: %w", transferID, ErrTransferExpired, err)
		}
		return nil, transferErr("list data", transferID, err)
	}
	return out, nil
}

// validate refuses a progress report neither platform accepts: no transfer,
// an unknown status, a percent outside 0–100.
func (p Progress) validate(transferID string) error {
	if err := requireArg("transferId", transferID); err != nil {
		return err
	}
	switch p.Status {
	case StatusInProgress, StatusSuccess, StatusIncomplete, StatusFailed:
	default:
		return fmt.Errorf("%w: progress status %q", ErrInvalidArgument, p.Status)
	}
	if p.Percent < 0 || p.Percent > 100 {
		return fmt.Errorf("%w: progress percent %d outside 0–100", ErrInvalidArgument, p.Percent)
	}
	return nil
}

// ReportProgress reports progress or settles the transfer. A 403 means the
// transfer is already settled (ErrTransferSettled) and a 400 for this
// validated payload that it is past its 14 days (ErrTransferExpired); both
// are final.
func (c *AMP) ReportProgress(ctx context.Context, clientKey, transferID string, p Progress) error {
	if err := p.validate(transferID); err != nil {
		return err
	}
	req := Request{Method: http.MethodPost, Path: ampBase + "/progress/" + url.PathEscape(transferID), Body: p, Route: RouteProgress}
	err := c.p.Do(ctx, clientKey, req, nil)
	if err != nil && errors.Is(err, ErrBadRequest) {
		return fmt.Errorf("report progress of transfer %s: %w: %w", transferID, ErrTransferExpired, err)
	}
	if err != nil {
		return transferErr("report progress", transferID, err)
	}
	return nil
}

// ErrorDetails fetches what the server-side listener reported when it failed
// ({"exceptionType","safeStackTrace"} on recent CCMA/JCMA), as raw JSON
// because its shape depends on the server app's version. It is nil when the
// product answered with an empty body.
func (c *AMP) ErrorDetails(ctx context.Context, clientKey, transferID string) (json.RawMessage, error) {
	if err := requireArg("transferId", transferID); err != nil {
		return nil, err
	}
	var out json.RawMessage
	req := Request{Path: ampBase + "/error/" + url.PathEscape(transferID), Route: RouteError}
	if err := c.p.Do(ctx, clientKey, req, &out); err != nil {
		return nil, transferErr("error details", transferID, err)
	}
	return out, nil
}

// Feedback sends details back to the server app; new feedback overwrites the
// previous one, so repeating it is harmless.
func (c *AMP) Feedback(ctx context.Context, clientKey, transferID string, details any) error {
	if err := requireArg("transferId", transferID); err != nil {
		return err
	}
	if details == nil {
		return fmt.Errorf("%w: nil feedback details", ErrInvalidArgument)
	}
	body := struct {
		Details any `json:"details"`
	}{details}
	req := Request{Method: http.MethodPost, Path: ampBase + "/feedback/" + url.PathEscape(transferID), Body: body, Route: RouteFeedback}
	if err := c.p.Do(ctx, clientKey, req, nil); err != nil {
		return transferErr("feedback", transferID, err)
	}
	return nil
}

// Webhook returns the migration webhook endpoints registered for the app on
// the tenant.
func (c *AMP) Webhook(ctx context.Context, clientKey string) ([]string, error) {
	var out struct {
		Endpoints []string `json:"endpoints"`
	}
	if err := c.p.Do(ctx, clientKey, Request{Path: ampBase + "/webhook", Route: RouteWebhook}, &out); err != nil {
		return nil, fmt.Errorf("read migration webhook: %w", err)
	}
	return out.Endpoints, nil
}

// SetWebhook replaces the registered migration webhook endpoints. The
// platform requires a non-empty list of absolute URLs; that is checked here
// so a misconfiguration fails before any call.
func (c *AMP) SetWebhook(ctx context.Context, clientKey string, endpoints []string) error {
	if len(endpoints) == 0 {
		return fmt.Errorf("%w: no webhook endpoints", ErrInvalidArgument)
	}
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%w: webhook endpoint %q is not an absolute http(s) URL", ErrInvalidArgument, e)
		}
	}
	body := struct {
		Endpoints []string `json:"endpoints"`
	}{endpoints}
	req := Request{Method: http.MethodPut, Path: ampBase + "/webhook", Body: body, Route: RouteWebhook}
	if err := c.p.Do(ctx, clientKey, req, nil); err != nil {
		return fmt.Errorf("register migration webhook: %w", err)
	}
	return nil
}

// maxDownloadRedirects bounds storage redirects (S3 answers 307 while a new
// bucket's DNS propagates).
const maxDownloadRedirects = 5

// checkDownloadRedirect keeps a presigned download on TLS once it started
// there, holds every hop to the data URL rules (the dialer checks its
// address) and stops redirect loops.
func (c *downloader) checkDownloadRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxDownloadRedirects {
		return fmt.Errorf("stopped after %d redirects", maxDownloadRedirects)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect from https to %s", req.URL.Scheme)
	}
	if err := c.guard.checkScheme(req.URL.Scheme, req.URL.Hostname()); err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	return nil
}
