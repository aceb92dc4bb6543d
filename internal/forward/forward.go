// Package forward is the bundled implementation of the vendor hooks for
// backends in any language: it POSTs every event of the feed, and every
// migration upload, to the vendor's FORWARD_URL, signed per the Standard
// Webhooks specification (see internal/webhook).
//
// A Forwarder is a connectrelay.LifecycleListener, MigrationListener and
// Importer, so it sits where a Go vendor's own hooks would: the worker's event
// and import tasks call it, and the tasks' retries (backoff, archiving, the
// monitoring UI) are the delivery's retries. The webhook-id of an event is the
// event's id ("evt_<n>"), of an upload a hash of its transfer and s3Key ("upl_…"):
// both stay the same across retries, so the backend uses them to drop repeats.
//
// The body is {"type", "timestamp", "data"}; data holds the tenant's public
// fields and never a shared secret or a token. An upload is announced as
// migration.upload_ready with the URL of the internal API that streams its data;
// the backend's answer decides the upload: 200/204 imported, 202 result reported
// later through the internal API, 4xx other than 408 and 429 failed with the
// backend's message, anything else retried.
package forward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/webhook"
	"github.com/connectrelay/connectrelay/product"
)

// EventUploadReady is the type of the delivery announcing an upload; it has no
// feed event of its own (the upload's import task sends it).
const EventUploadReady connectrelay.EventType = "migration.upload_ready"

// ErrStatus is wrapped by the error of a delivery the backend did not accept.
var ErrStatus = errors.New("forward: backend did not accept the delivery")

// maxMessage bounds how much of the backend's answer is quoted in errors.
const maxMessage = 512

// maxDrain bounds how much of an answer is read to reuse the connection.
const maxDrain = 64 << 10

// TenantSource returns a tenant's stored state, for uploads (whose import request
// names only the transfer).
type TenantSource interface {
	Get(ctx context.Context, clientKey string) (connectrelay.Tenant, error)
}

// Config configures a Forwarder.
type Config struct {
	// URL is where deliveries are POSTed (FORWARD_URL). Required.
	URL string
	// Secret signs every delivery (FORWARD_SECRET). Required.
	Secret webhook.Secret
	// Timeout bounds one delivery, answer included (FORWARD_TIMEOUT). Default 30 s.
	Timeout time.Duration
	// InternalURL is the base URL of the receiver's internal API as the backend
	// reaches it; an upload's dataUrl and resultUrl are under it. Required.
	InternalURL string
	// Tenants looks up an upload's tenant. Required.
	Tenants TenantSource
	// Client sends the deliveries; it must not follow redirects. Default: a
	// client of its own that does not.
	Client *http.Client
	// Logger logs deliveries. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of webhook-timestamp. Default time.Now.
	Now func() time.Time
}

// Forwarder delivers events and uploads to the vendor's backend.
type Forwarder struct {
	cfg Config
	url *url.URL
}

var (
	_ connectrelay.LifecycleListener = (*Forwarder)(nil)
	_ connectrelay.MigrationListener = (*Forwarder)(nil)
	_ connectrelay.Importer          = (*Forwarder)(nil)
)

// New returns a Forwarder, or an error naming the missing or invalid field.
func New(cfg Config) (*Forwarder, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("forward: URL must be an absolute http(s) URL")
	}
	if !cfg.Secret.Valid() {
		return nil, errors.New("forward: Secret is required")
	}
	if _, err := url.Parse(cfg.InternalURL); err != nil || !strings.HasPrefix(cfg.InternalURL, "http") {
		return nil, errors.New("forward: InternalURL must be the http(s) base URL of the internal API")
	}
	cfg.InternalURL = strings.TrimRight(cfg.InternalURL, "/")
	if cfg.Tenants == nil {
		return nil, errors.New("forward: Tenants is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		cfg.Client = &http.Client{Transport: t}
	}
	c := *cfg.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &c
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Forwarder{cfg: cfg, url: u}, nil
}

// message is a delivery's body.
type message struct {
	Type      connectrelay.EventType `json:"type"`
	Timestamp time.Time              `json:"timestamp"`
	Data      any                    `json:"data"`
}

// tenantData are the fields every tenant and migration event carries.
type tenantData struct {
	Sequence int64               `json:"sequence"`
	Tenant   connectrelay.Tenant `json:"tenant"`
}

// TenantLifecycle forwards a tenant event; any answer but 2xx retries it.
func (f *Forwarder) TenantLifecycle(ctx context.Context, ev *connectrelay.LifecycleEvent) error {
	data := struct {
		tenantData
		Changes          []string `json:"changes,omitempty"`
		LinkedClientKeys []string `json:"linkedClientKeys,omitempty"`
	}{tenantData{ev.Sequence, ev.Tenant}, ev.Changes, ev.LinkedClientKeys}
	_, err := f.deliver(ctx, ev.ID, message{ev.Type, ev.At.UTC(), data})
	return err
}

// TransferEvent forwards a transfer event; any answer but 2xx retries it.
func (f *Forwarder) TransferEvent(ctx context.Context, ev *connectrelay.TransferEvent) error {
	data := struct {
		tenantData
		Transfer *connectrelay.Transfer `json:"transfer,omitempty"`
		Event    json.RawMessage        `json:"event,omitempty"`
	}{tenantData: tenantData{ev.Sequence, ev.Tenant}, Event: ev.Raw}
	if ev.Transfer.TransferID != "" {
		data.Transfer = &ev.Transfer
	}
	_, err := f.deliver(ctx, ev.ID, message{ev.Type, ev.At.UTC(), data})
	return err
}

// UploadID is the webhook-id of the upload_ready delivery of an upload: stable
// for the upload across attempts and reschedules.
func UploadID(transferID, s3Key string) string {
	sum := sha256.Sum256([]byte(transferID + "\x00" + s3Key))
	return "upl_" + hex.EncodeToString(sum[:16])
}

// Import announces an upload to the backend, which fetches the data itself from
// the internal API (req.Data is left unread, so the service does not download
// it). The answer decides the upload, see the package doc.
func (f *Forwarder) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	tn, err := f.cfg.Tenants.Get(ctx, req.Transfer.ClientKey)
	if err != nil {
		return fmt.Errorf("forward: tenant of the upload: %w", err)
	}
	base := f.cfg.InternalURL + "/v1/migrations/" + url.PathEscape(req.Transfer.TransferID) +
		"/uploads/" + url.PathEscape(req.S3Key)
	data := struct {
		Tenant    connectrelay.Tenant   `json:"tenant"`
		Transfer  connectrelay.Transfer `json:"transfer"`
		Label     string                `json:"label"`
		S3Key     string                `json:"s3Key"`
		Attempt   int                   `json:"attempt"`
		DataURL   string                `json:"dataUrl"`
		ResultURL string                `json:"resultUrl"`
	}{tn, req.Transfer, req.Label, req.S3Key, req.Attempt, base + "/data", base + "/result"}
	code, err := f.deliver(ctx, UploadID(req.Transfer.TransferID, req.S3Key), message{EventUploadReady, f.cfg.Now().UTC(), data})
	switch {
	case err == nil && code == http.StatusAccepted:
		return fmt.Errorf("forward: backend answered 202: %w", connectrelay.ErrImportPending)
	case err == nil:
		return nil
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return fmt.Errorf("%w: %w", err, connectrelay.ErrImportFailed)
	default:
		return err
	}
}

// deliver POSTs one signed message and returns the answer's status code; the
// error is nil only for a 2xx. A 429 or 503 with Retry-After asks the task layer
// for that delay.
func (f *Forwarder) deliver(ctx context.Context, id string, m message) (int, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("forward: encode %s: %w", m.Type, err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url.String(), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("forward: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "connectrelay/"+connectrelay.Version)
	f.cfg.Secret.SetHeaders(req.Header, id, f.cfg.Now(), body)
	start := time.Now()
	resp, err := f.cfg.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("forward: POST %s (%s %s): %w", f.redacted(), m.Type, id, unwrapURL(err))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	log := f.cfg.Logger.With(slog.String("type", string(m.Type)), slog.String("webhook_id", id),
		slog.Int("status", resp.StatusCode), slog.Duration("took", time.Since(start)))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		log.DebugContext(ctx, "event forwarded")
		return resp.StatusCode, nil
	}
	err = fmt.Errorf("%w: POST %s (%s %s): %s%s", ErrStatus, f.redacted(), m.Type, id, resp.Status, quote(msg))
	log.WarnContext(ctx, "backend did not accept the delivery", slog.String("answer", string(truncate(msg))))
	if ra := retryAfter(resp.Header.Get("Retry-After"), f.cfg.Now()); ra > 0 &&
		(resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		return resp.StatusCode, &product.RetryLaterError{After: ra, Err: err}
	}
	return resp.StatusCode, err
}

// redacted is the forward URL without query or fragment, which may hold a
// credential of the backend's.
func (f *Forwarder) redacted() string {
	u := *f.url
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

// unwrapURL drops the *url.Error around a transport error: it repeats the URL,
// query included.
func unwrapURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// truncate keeps at most maxMessage bytes of valid UTF-8.
func truncate(b []byte) []byte {
	b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	for len(b) > maxMessage {
		_, n := utf8.DecodeLastRune(b)
		b = b[:len(b)-n]
	}
	return bytes.TrimSpace(b)
}

// quote is the backend's message as it goes in an error: ": " and the quoted
// text (the "message" member of a JSON object answer, else the answer), or
// nothing for an empty answer.
func quote(msg []byte) string {
	var obj struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(msg, &obj) == nil && obj.Message != "" {
		msg = []byte(obj.Message)
	}
	if t := truncate(msg); len(t) > 0 {
		return ": " + strconv.Quote(string(t))
	}
	return ""
}

// retryAfter parses a Retry-After header (seconds or an HTTP date), capped at
// an hour; 0 when absent or invalid.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, time.Hour))
}
