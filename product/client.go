// Package product is the outbound half of the Connect protocol: the worker's HTTP
// client for a tenant's product REST API (Jira, Confluence), called as the app
// with an HS256 JWT signed by the tenant's shared secret.
//
// The client is deliberately narrow about where it sends a JWT. Every call
// re-reads the tenant (so a site rename or secret rotation stored by an
// installed callback takes effect at once), checks the stored baseUrl against
// the host policy before anything goes on the wire, and signs each attempt
// afresh. Redirects are followed only within the same origin (scheme, host and
// port) and are re-signed for the new path; a redirect anywhere else is
// returned as a *RedirectError and never receives the token.
//
// AMP is the client of the App Migration Platform API under the tenant's
// /rest/atlassian-connect/1/migration (docs/protocol.md#app-migration-platform-connect).
// Its calls go through Client; the one exception is the migrated data itself:
// OpenData fetches the presigned URL the product's data API answered with a
// separate plain HTTP client that never carries the app's JWT. Its errors wrap
// Client's sentinels and add ErrTransferSettled and ErrTransferExpired, which
// are final for a transfer and must not be retried.
package product

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay/connect"
)

// Target is what the client needs to call one tenant. It is read through the
// TargetSource on every attempt rather than cached, because the baseUrl and
// secret change whenever a verified installed callback says so.
type Target struct {
	// ClientKey identifies the tenant; when set it must equal the key asked for.
	ClientKey string
	// BaseURL is the tenant's current product base URL, including any context
	// path such as Confluence's "/wiki".
	BaseURL string
	// Secret is the tenant's current shared secret (HS256 key).
	Secret []byte
}

// TargetSource resolves a clientKey to the tenant's current Target. It is the
// consumer-side view of the tenant store; implementations decrypt the secret
// and must not cache it across an installed callback.
type TargetSource interface {
	Target(ctx context.Context, clientKey string) (Target, error)
}

// Config configures a Client. Zero values select the documented defaults.
type Config struct {
	// AppKey is the app key from the descriptor; it is the iss of every JWT
	// and part of the default User-Agent. Required.
	AppKey string
	// Hosts decides which product base URLs may receive a JWT. Required: there
	// is no safe default that would let a tenant row point us anywhere.
	Hosts *connect.HostPolicy
	// HTTPClient sends the requests. It is copied and its CheckRedirect
	// replaced, because redirects are handled (and re-signed) by Do. If nil, a
	// client with a clone of http.DefaultTransport is used.
	HTTPClient *http.Client
	// AttemptTimeout bounds one attempt, redirects and reading the body
	// included. If zero, 10 seconds.
	AttemptTimeout time.Duration
	// MaxAttempts bounds the attempts of one Do call (first try included).
	// If zero, 4. Use 1 to disable retries.
	MaxAttempts int
	// MaxRetryAfter is the longest Retry-After the client sleeps through
	// itself. A longer one ends Do with a *RetryLaterError so that the task
	// layer can reschedule instead of holding a worker. If zero, 30 seconds.
	MaxRetryAfter time.Duration
	// BackoffBase is the delay before the second attempt; it doubles for each
	// further attempt. If zero, 500 milliseconds.
	BackoffBase time.Duration
	// BackoffMax caps the exponential delay. If zero, 10 seconds.
	BackoffMax time.Duration
	// Jitter spreads each backoff delay uniformly by ±Jitter of its value so
	// that workers retrying together do not stay in step. If zero, 0.2; a
	// negative value disables jitter. At most 1.
	Jitter float64
	// MaxResponseBytes bounds a success body read for decoding. If zero, 4 MiB.
	MaxResponseBytes int64
	// UserAgent is sent on every request. If empty,
	// "connectrelay/<module version> <AppKey>".
	UserAgent string
	// Now is the clock for JWT iat/exp and Retry-After dates. If nil, time.Now.
	Now func() time.Time
	// Logger receives retry and redirect warnings; never tokens or secrets.
	// If nil, slog.Default().
	Logger *slog.Logger
	// Observe, if set, is called once per attempt, for metrics. route is the
	// Request's low-cardinality Route; status is 0 when no response arrived.
	Observe func(method, route string, status int, err error)
}

// Request is one call to the product API.
type Request struct {
	// Method defaults to GET.
	Method string
	// Path is relative to the tenant's baseUrl and starts with "/", e.g.
	// "/rest/atlassian-connect/1/addons/my-app". It is used as written
	// (already escaped); identifiers in it must be escaped by the caller with
	// url.PathEscape. It must not carry a query or "." / ".." segments.
	Path string
	// Query is appended to the URL and covered by the JWT's qsh.
	Query url.Values
	// Body, if not nil, is sent as JSON. A GET or HEAD with a Body is refused:
	// the products answer 403 to GETs with bodies.
	Body any
	// Route is the path template used in errors, logs and Observe, e.g.
	// "/rest/atlassian-connect/1/migration/progress/{transferId}". If empty,
	// Path is used, which is high-cardinality when it contains identifiers.
	Route string
}

// Client calls tenants' product REST APIs as the app. It is safe for
// concurrent use.
type Client struct {
	cfg     Config
	targets TargetSource
	hc      *http.Client
	log     *slog.Logger
	// resolve says where and how each attempt is sent: the tenant's baseUrl
	// with a Connect JWT (connectEndpoint), or a Forge installation's API
	// host with its system token (ForgeAMP).
	resolve func(ctx context.Context, key string) (endpoint, error)
}

// endpoint is where one attempt of a call goes and how it is authorised.
type endpoint struct {
	// base is the checked URL that Request.Path is relative to; redirects
	// are followed only within its origin and path.
	base *url.URL
	// authorize sets the credentials of one request (every redirect hop is
	// authorised afresh) and returns the token it set, which is scrubbed from
	// error bodies.
	authorize func(req *http.Request) (token string, err error)
}

const (
	defaultAttemptTimeout   = 10 * time.Second
	defaultMaxAttempts      = 4
	defaultMaxRetryAfter    = 30 * time.Second
	defaultBackoffBase      = 500 * time.Millisecond
	defaultBackoffMax       = 10 * time.Second
	defaultJitter           = 0.2
	defaultMaxResponseBytes = 4 << 20
	maxErrorBodyBytes       = 1 << 10
	maxErrorBodyRead        = 64 << 10
	maxRedirects            = 5
	modulePath              = "github.com/connectrelay/connectrelay"
)

// New validates cfg, applies defaults and returns a Client reading tenants
// from targets.
func New(cfg Config, targets TargetSource) (*Client, error) {
	switch {
	case cfg.AppKey == "":
		return nil, errors.New("product: AppKey is required")
	case cfg.Hosts == nil:
		return nil, errors.New("product: Hosts is required")
	case targets == nil:
		return nil, errors.New("product: a TargetSource is required")
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	c.targets = targets
	c.resolve = c.connectEndpoint
	return c, nil
}

// newClient validates and defaults the HTTP behaviour of cfg (everything but
// AppKey, Hosts and the tenant source) and returns a Client without a
// resolver.
func newClient(cfg Config) (*Client, error) {
	switch {
	case cfg.AttemptTimeout < 0:
		return nil, errors.New("product: AttemptTimeout cannot be negative")
	case cfg.MaxAttempts < 0:
		return nil, errors.New("product: MaxAttempts cannot be negative")
	case cfg.MaxRetryAfter < 0:
		return nil, errors.New("product: MaxRetryAfter cannot be negative")
	case cfg.BackoffBase < 0 || cfg.BackoffMax < 0:
		return nil, errors.New("product: backoff durations cannot be negative")
	case cfg.Jitter > 1:
		return nil, errors.New("product: Jitter cannot be more than 1")
	case cfg.MaxResponseBytes < 0:
		return nil, errors.New("product: MaxResponseBytes cannot be negative")
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = defaultAttemptTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = defaultMaxRetryAfter
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = defaultBackoffBase
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = defaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		return nil, errors.New("product: BackoffMax cannot be less than BackoffBase")
	}
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = defaultJitter
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = defaultMaxResponseBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = strings.TrimSpace("connectrelay/" + moduleVersion() + " " + cfg.AppKey)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		hc.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	// Do follows redirects itself so that it can refuse other origins and
	// re-sign for the new path; net/http would forward the old token.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, hc: &hc, log: log}, nil
}

// moduleVersion is this module's version as recorded in the binary, so the
// User-Agent tells Atlassian support which release made a call.
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath && d.Version != "" {
			return d.Version
		}
	}
	return "dev"
}

// Do sends req to the tenant clientKey and decodes a 2xx JSON answer into out
// (nil discards it; an empty body leaves out untouched).
//
// 429, 5xx and network failures are retried up to MaxAttempts with
// exponential backoff and jitter, honouring Retry-After up to MaxRetryAfter;
// other statuses are returned at once as a *StatusError. Every Request the
// product API offers us (reads, progress reports, webhook PUTs, feedback
// overwrites) is safe to repeat, which is why POST and PUT are retried too.
// A cancelled or expired ctx ends Do with an error wrapping ctx.Err().
func (c *Client) Do(ctx context.Context, clientKey string, req Request, out any) error {
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	req.Method = strings.ToUpper(req.Method)
	if req.Route == "" {
		req.Route = req.Path
	}
	if err := checkPath(req.Path); err != nil {
		return fmt.Errorf("product: %s %s: %w", req.Method, req.Route, err)
	}
	var body []byte
	if req.Body != nil {
		if req.Method == http.MethodGet || req.Method == http.MethodHead {
			return fmt.Errorf("product: %s %s: a %s request cannot carry a body", req.Method, req.Route, req.Method)
		}
		b, err := json.Marshal(req.Body)
		if err != nil {
			return fmt.Errorf("product: %s %s: encode body: %w", req.Method, req.Route, err)
		}
		body = b
	}

	for attempt := 1; ; attempt++ {
		status, retry, err := c.attempt(ctx, clientKey, req, body, out)
		if c.cfg.Observe != nil {
			c.cfg.Observe(req.Method, req.Route, status, err)
		}
		if err == nil {
			return nil
		}
		if !retry {
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%w (%w)", err, ctxErr)
		}
		delay := c.backoff(attempt)
		if after, ok := RetryAfter(err); ok {
			if after > c.cfg.MaxRetryAfter {
				return &RetryLaterError{After: after, Err: err}
			}
			delay = after
		}
		if attempt >= c.cfg.MaxAttempts {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return fmt.Errorf("%w (next attempt in %s would pass the context deadline)", err, delay.Round(time.Millisecond))
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "product request failed, retrying",
			slog.String("client_key", clientKey),
			slog.String("method", req.Method),
			slog.String("route", req.Route),
			slog.Int("status", status),
			slog.Int("attempt", attempt),
			slog.Duration("delay", delay),
			slog.String("error", err.Error()))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff is the delay after the given (1-based) failed attempt.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffBase
	for i := 1; i < attempt && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	if c.cfg.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + c.cfg.Jitter*(2*rand.Float64()-1)))
	}
	return d
}

// checkPath refuses paths that could leave the tenant's base URL or smuggle a
// query past Request.Query.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return fmt.Errorf("path %q must start with a single /", p)
	}
	if strings.ContainsAny(p, "?#") {
		return fmt.Errorf("path %q must not contain a query or fragment (use Request.Query)", p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("path %q must not contain dot segments", p)
		}
	}
	if _, err := url.PathUnescape(p); err != nil {
		return fmt.Errorf("path %q is not validly escaped: %w", p, err)
	}
	return nil
}

// joinURL appends the escaped path p to the base URL, keeping the base's
// context path (Confluence "/wiki").
func joinURL(base *url.URL, p string, q url.Values) (*url.URL, error) {
	raw := strings.TrimSuffix(base.EscapedPath(), "/") + p
	decoded, err := url.PathUnescape(raw)
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, Path: decoded, RawQuery: q.Encode()}
	if u.EscapedPath() != raw {
		u.RawPath = raw
	}
	return u, nil
}

// attempt performs one attempt: it resolves the tenant, checks the host,
// sends (following same-origin redirects) and reads the answer. It reports the
// final status (0 without a response) and whether the failure is worth
// another attempt.
func (c *Client) attempt(ctx context.Context, clientKey string, req Request, body []byte, out any) (int, bool, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("product: %s %s: "+format, append([]any{req.Method, req.Route}, args...)...)
	}
	ep, err := c.resolve(ctx, clientKey)
	if err != nil {
		return 0, false, fail("%w", err)
	}
	base := ep.base
	u, err := joinURL(base, req.Path, req.Query)
	if err != nil {
		return 0, false, fail("build URL: %w", err)
	}

	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()

	method, payload := req.Method, body
	for hop := 0; ; hop++ {
		hreq, err := http.NewRequestWithContext(actx, method, u.String(), nil)
		if err != nil {
			return 0, false, fail("build request: %w", err)
		}
		if payload != nil {
			hreq.Body = io.NopCloser(bytes.NewReader(payload))
			hreq.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
			hreq.ContentLength = int64(len(payload))
			hreq.Header.Set("Content-Type", "application/json")
		}
		hreq.Header.Set("Accept", "application/json")
		hreq.Header.Set("User-Agent", c.cfg.UserAgent)
		token, err := ep.authorize(hreq)
		if err != nil {
			return 0, false, fail("sign: %w", err)
		}

		resp, err := c.hc.Do(hreq)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return 0, false, fail("%w", err)
			}
			return 0, true, fail("%w: %w", ErrUnavailable, err)
		}

		if isRedirect(resp.StatusCode) {
			loc := resp.Header.Get("Location")
			drainClose(resp.Body)
			next, err := redirectTarget(base, u, method, resp.StatusCode, loc, hop)
			if err != nil {
				re := &RedirectError{Method: req.Method, Route: req.Route, StatusCode: resp.StatusCode, Location: loc}
				c.log.LogAttrs(ctx, slog.LevelWarn, "product redirect not followed",
					slog.String("client_key", clientKey),
					slog.String("route", req.Route),
					slog.Int("status", resp.StatusCode),
					slog.String("location", loc),
					slog.String("reason", err.Error()))
				return resp.StatusCode, false, fmt.Errorf("%w: %w", re, err)
			}
			if resp.StatusCode == http.StatusSeeOther && method != http.MethodHead {
				method, payload = http.MethodGet, nil
			}
			u = next
			continue
		}
		return c.readResponse(ctx, resp, req, token, out)
	}
}

// connectEndpoint resolves a Connect tenant: its current baseUrl, checked
// against the host policy, and a JWT signed with its shared secret.
func (c *Client) connectEndpoint(ctx context.Context, clientKey string) (endpoint, error) {
	target, err := c.targets.Target(ctx, clientKey)
	if err != nil {
		return endpoint{}, fmt.Errorf("load tenant %s: %w", clientKey, err)
	}
	if target.ClientKey != "" && target.ClientKey != clientKey {
		return endpoint{}, fmt.Errorf("tenant source returned tenant %s for %s", target.ClientKey, clientKey)
	}
	if len(target.Secret) == 0 {
		return endpoint{}, fmt.Errorf("tenant %s: %w", clientKey, ErrNoSecret)
	}
	base, err := c.cfg.Hosts.CheckBaseURL(target.BaseURL)
	if err != nil {
		return endpoint{}, fmt.Errorf("tenant %s: %w: %w", clientKey, ErrHostNotAllowed, err)
	}
	return endpoint{base: base, authorize: func(req *http.Request) (string, error) {
		if err := connect.SignRequest(req, base.String(), c.cfg.AppKey, target.Secret, c.cfg.Now()); err != nil {
			return "", err
		}
		return strings.TrimPrefix(req.Header.Get("Authorization"), "JWT "), nil
	}}, nil
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// redirectTarget decides whether a redirect from cur may be followed with a
// JWT: only to the same origin and under the tenant's base path (the qsh is
// relative to it), only a bounded number of times, and for
// methods other than GET and HEAD only with 307/308, which by definition
// repeat the method and body, or 303, which asks for a GET of the result
// (301/302 are ambiguous: clients commonly turn a POST into a GET).
func redirectTarget(base, cur *url.URL, method string, code int, loc string, hop int) (*url.URL, error) {
	if loc == "" {
		return nil, errors.New("no Location header")
	}
	if hop+1 > maxRedirects {
		return nil, fmt.Errorf("more than %d redirects", maxRedirects)
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("bad Location: %w", err)
	}
	next := cur.ResolveReference(ref)
	next.Fragment, next.RawFragment = "", ""
	if next.Scheme != cur.Scheme || !strings.EqualFold(next.Host, cur.Host) || next.User != nil {
		return nil, errors.New("redirect leaves the tenant's origin")
	}
	if bp := strings.TrimSuffix(base.EscapedPath(), "/"); bp != "" {
		if p := next.EscapedPath(); p != bp && !strings.HasPrefix(p, bp+"/") {
			return nil, fmt.Errorf("redirect leaves the tenant's base path %s", bp)
		}
	}
	if method != http.MethodGet && method != http.MethodHead &&
		code != http.StatusTemporaryRedirect && code != http.StatusPermanentRedirect && code != http.StatusSeeOther {
		return nil, fmt.Errorf("%d would change the %s request", code, method)
	}
	return next, nil
}

// readResponse turns a non-redirect response into the attempt's outcome.
func (c *Client) readResponse(ctx context.Context, resp *http.Response, req Request, token string, out any) (int, bool, error) {
	defer resp.Body.Close()
	code := resp.StatusCode
	if code >= 200 && code <= 299 {
		data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
		if err != nil {
			if ctx.Err() != nil {
				return code, false, fmt.Errorf("product: %s %s: read body: %w", req.Method, req.Route, err)
			}
			return code, true, fmt.Errorf("product: %s %s: read body: %w: %w", req.Method, req.Route, ErrUnavailable, err)
		}
		if int64(len(data)) > c.cfg.MaxResponseBytes {
			return code, false, fmt.Errorf("product: %s %s: %w (limit %d bytes)", req.Method, req.Route, ErrResponseTooLarge, c.cfg.MaxResponseBytes)
		}
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return code, false, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return code, false, fmt.Errorf("product: %s %s: decode %d response: %w", req.Method, req.Route, code, err)
		}
		return code, false, nil
	}

	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyRead))
	se := &StatusError{
		Method:     req.Method,
		Route:      req.Route,
		StatusCode: code,
		Body:       errorBody(data, token),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.cfg.Now()),
	}
	retry := code == http.StatusTooManyRequests || (code >= 500 && code <= 599)
	return code, retry, se
}

// errorBody keeps the start of an error body for diagnosis: our token is
// scrubbed before truncation (so no fragment of it survives the cut), and the
// result is valid UTF-8 of at most 1 KiB.
func errorBody(data []byte, token string) string {
	s := string(bytes.TrimSpace(data))
	if token != "" {
		s = strings.ReplaceAll(s, token, "[redacted]")
	}
	if len(s) > maxErrorBodyBytes {
		cut := maxErrorBodyBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// drainClose reads a little of an unwanted body so the connection can be
// reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBodyRead))
	_ = body.Close()
}

// Get is Do for a GET of path (relative to the tenant's baseUrl, escaped, no
// query), decoding a 2xx JSON answer into out. path is also the Route reported
// to Observe, so prefer Do with a templated Route for paths with identifiers.
func (c *Client) Get(ctx context.Context, tenantID, path string, out any) error {
	return c.Do(ctx, tenantID, Request{Path: path}, out)
}
