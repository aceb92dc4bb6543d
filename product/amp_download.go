package product

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DownloadError is a non-200 answer of a presigned data URL. It never holds
// the URL, whose query is a credential.
type DownloadError struct {
	StatusCode int
	// Body is the start of the storage service's error document (≤ 1 KiB).
	Body string
	// Expired is true when the answer says the presigned URL has expired.
	Expired bool
}

// Error reports the storage answer without the presigned URL.
func (e *DownloadError) Error() string {
	msg := fmt.Sprintf("storage answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + strconv.Quote(e.Body)
	}
	return msg
}

// Is makes a DownloadError match ErrDownloadFailed, and ErrUnavailable
// when the storage service is overloaded or failing (429, 5xx), so that the
// task layer treats both the product's and the store's outages as transient.
func (e *DownloadError) Is(target error) bool {
	switch target {
	case ErrDownloadFailed:
		return true
	case ErrUnavailable:
		return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
	}
	return false
}

// OpenData streams an uploaded file: it asks the product for the presigned
// URL, then GETs it with the download client, without any Authorization. If
// the URL turns out to be expired (400/403 whose body says so), a fresh one is
// asked for once. The caller must Close the reader; the body is bound to ctx
// (cancel it to abort) and fails with ErrDownloadStalled when no data arrives
// for the stall timeout, but has no overall deadline.
func (c *AMP) OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error) {
	return c.openData(ctx, clientKey, s3Key, c.DataURL)
}

// openData is OpenData with the product's data URL call dataURL: it
// downloads what dataURL answers and asks once more when that URL expired.
func (c *downloader) openData(ctx context.Context, clientKey, s3Key string,
	dataURL func(ctx context.Context, clientKey, s3Key string) (string, error)) (io.ReadCloser, error) {
	for try := 1; ; try++ {
		raw, err := dataURL(ctx, clientKey, s3Key)
		if err != nil {
			return nil, err
		}
		rc, err := c.download(ctx, raw)
		if err == nil {
			return rc, nil
		}
		if de, ok := errors.AsType[*DownloadError](err); ok && de.Expired && try == 1 {
			c.log.LogAttrs(ctx, slog.LevelInfo, "presigned data URL expired, asking for a new one",
				slog.String("client_key", clientKey), slog.String("s3_key", s3Key))
			continue
		}
		return nil, fmt.Errorf("download of upload %q: %w", s3Key, err)
	}
}

// download GETs a presigned URL and returns its body wrapped in a stall
// watchdog. It sets no credentials: the URL carries its own.
func (c *downloader) download(ctx context.Context, raw string) (io.ReadCloser, error) {
	u, err := c.checkDataURL(raw)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithCancelCause(ctx)
	w := newWatchdog(c.stall, cancel)
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, raw, nil)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, fmt.Errorf("%w: %v", ErrBadDataURL, redactURLError(err, u))
	}
	w.arm()
	resp, err := c.dl.Do(req)
	w.disarm()
	if err != nil {
		w.stop()
		cause := context.Cause(dctx)
		cancel(nil)
		switch {
		case errors.Is(cause, ErrDownloadStalled):
			return nil, fmt.Errorf("%w: no response headers within %s", ErrDownloadStalled, c.stall)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, ErrAddressNotAllowed):
			return nil, redactURLError(err, u)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, redactURLError(err, u))
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
		w.stop()
		cancel(nil)
		de := &DownloadError{StatusCode: resp.StatusCode, Body: truncate(string(bytes.TrimSpace(data)), 1<<10)}
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusBadRequest {
			de.Expired = bytes.Contains(bytes.ToLower(data), []byte("expired"))
		}
		return nil, de
	}
	return &stallReader{body: resp.Body, w: w, ctx: dctx, cancel: cancel, stall: c.stall}, nil
}

// redactURLError drops the query (the presigned signature) from the URL that
// net/http puts into its errors.
func redactURLError(err error, u *url.URL) error {
	safe := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return &url.Error{Op: ue.Op, URL: safe, Err: ue.Err}
	}
	return errors.New(strings.ReplaceAll(err.Error(), u.RawQuery, "[redacted]"))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.ToValidUTF8(s[:n], "\uFFFD")
}

// watchdog cancels a download that spends longer than its timeout waiting
// for the network. It is armed only while a Read (or the wait for headers) is
// in progress, so a consumer that pauses between reads is never cut off.
type watchdog struct {
	mu      sync.Mutex
	t       *time.Timer
	timeout time.Duration
	stopped bool
}

func newWatchdog(timeout time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{timeout: timeout}
	w.t = time.AfterFunc(time.Hour, func() { cancel(ErrDownloadStalled) })
	w.t.Stop()
	return w
}

func (w *watchdog) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Reset(w.timeout)
	}
}

func (w *watchdog) disarm() { w.t.Stop() }

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
}

// stallReader is the body OpenData returns.
type stallReader struct {
	body   io.ReadCloser
	w      *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  time.Duration
	once   sync.Once
}

// Read arms the stall watchdog only while waiting for the network and
// reports a stall as ErrDownloadStalled rather than a bare cancellation.
func (r *stallReader) Read(p []byte) (int, error) {
	r.w.arm()
	n, err := r.body.Read(p)
	r.w.disarm()
	if err != nil && err != io.EOF {
		if errors.Is(context.Cause(r.ctx), ErrDownloadStalled) {
			return n, fmt.Errorf("%w: no data for %s", ErrDownloadStalled, r.stall)
		}
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return n, fmt.Errorf("download: %w: %w", ErrUnavailable, err)
		}
	}
	return n, err
}

// Close releases the connection and the watchdog; it is safe to call twice.
func (r *stallReader) Close() error {
	var err error
	r.once.Do(func() {
		r.w.stop()
		err = r.body.Close()
		r.cancel(nil)
	})
	return err
}
