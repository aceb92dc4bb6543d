package product

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/product/producttest"
)

const (
	ampClientKey   = "confluence:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	testTransferID = "2e170ff3-7ab4-4b8d-9d5f-0d1c3a4f5e6a"
)

type staticTargets struct{ baseURL string }

func (s staticTargets) Target(_ context.Context, clientKey string) (Target, error) {
	if clientKey != ampClientKey {
		return Target{}, fmt.Errorf("tenant %s not found", clientKey)
	}
	return Target{ClientKey: clientKey, BaseURL: s.baseURL, Secret: testSecret}, nil
}

// fakeS3 plays the storage behind presigned URLs. It fails the test if a
// request carries any credential of ours (an Authorization header or a jwt
// parameter): the app's JWT must never reach it.
type fakeS3 struct {
	t   testing.TB
	srv *httptest.Server

	mu     sync.Mutex
	hits   []string // signature of each request
	handle http.HandlerFunc
}

func newFakeS3(t testing.TB, h http.HandlerFunc) *fakeS3 {
	f := &fakeS3{t: t, handle: h}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("fake S3: request carried Authorization %q", a)
		}
		if r.URL.Query().Has("jwt") {
			t.Errorf("fake S3: request carried a jwt parameter")
		}
		f.mu.Lock()
		f.hits = append(f.hits, r.URL.Query().Get("X-Amz-Signature"))
		h := f.handle
		f.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeS3) Hits() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.hits...)
}

// presigned is a URL of the fake S3 that looks like a real presigned one.
func (f *fakeS3) presigned(key, sig string) string {
	return f.srv.URL + "/migration-bucket/" + key + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature=" + sig
}

type ampBundle struct {
	product *producttest.Server
}

func setupAMP(t testing.TB, basePath string, opts ...AMPOption) (*AMP, *ampBundle) {
	t.Helper()
	site := producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret, BasePath: basePath})
	hosts, err := connect.NewHostPolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatalf("NewHostPolicy: %v", err)
	}
	pc, err := New(Config{
		AppKey:      testAppKey,
		Hosts:       hosts,
		BackoffBase: time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, staticTargets{baseURL: site.BaseURL()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	opts = append([]AMPOption{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	return NewAMP(pc, nil, opts...), &ampBundle{product: site}
}

func jsonBody(status int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
}

// route answers by method and raw path (below the base path).
func route(t testing.TB, basePath string, routes map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + strings.TrimPrefix(r.URL.EscapedPath(), basePath)
		h, ok := routes[key]
		if !ok {
			t.Errorf("unexpected product call %s", key)
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}
}

func TestDataURL(t *testing.T) {
	c, b := setupAMP(t, "/wiki")
	s3Key := "transfer/1 data+file.json"
	b.product.SetHandler(route(t, "/wiki", map[string]http.HandlerFunc{
		"GET " + ampBase + "/data/transfer%2F1%20data+file.json": jsonBody(200, map[string]string{"url": "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=s"}),
	}))
	got, err := c.DataURL(t.Context(), ampClientKey, s3Key)
	if err != nil {
		t.Fatalf("DataURL: %v", err)
	}
	if got != "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=s" {
		t.Errorf("DataURL = %q", got)
	}
	if _, err := c.DataURL(t.Context(), ampClientKey, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty key: err = %v, want ErrInvalidArgument", err)
	}
	if n := len(b.product.Requests()); n != 1 {
		t.Errorf("product saw %d requests, want 1", n)
	}
}

func TestDataURLRefusesUnusableURLs(t *testing.T) {
	for _, bad := range []string{"", "ftp://files.example.com/x", "/relative/path", "https://user:pw@bucket.example.com/x", "javascript:alert(1)"} {
		t.Run(bad, func(t *testing.T) {
			c, b := setupAMP(t, "")
			b.product.SetHandler(jsonBody(200, map[string]string{"url": bad}))
			if _, err := c.DataURL(t.Context(), ampClientKey, "k"); !errors.Is(err, ErrBadDataURL) {
				t.Errorf("err = %v, want ErrBadDataURL", err)
			}
			if _, err := c.OpenData(t.Context(), ampClientKey, "k"); !errors.Is(err, ErrBadDataURL) {
				t.Errorf("OpenData err = %v, want ErrBadDataURL", err)
			}
		})
	}
}

// presignHandler answers the data API with presigned URLs whose signatures
// are sigs[0], sigs[1], ... per call.
func presignHandler(s3 *fakeS3, key string, sigs ...string) http.HandlerFunc {
	var mu sync.Mutex
	n := 0
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sig := sigs[min(n, len(sigs)-1)]
		n++
		mu.Unlock()
		jsonBody(200, map[string]string{"url": s3.presigned(key, sig)})(w, r)
	}
}

const expiredXML = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><Expires>2026-01-01T00:00:00Z</Expires></Error>`

func TestOpenData(t *testing.T) {
	c, b := setupAMP(t, "")
	s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/migration-bucket/k1" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "hello, migrated world")
	})
	b.product.SetHandler(presignHandler(s3, "k1", "sig-1"))
	rc, err := c.OpenData(t.Context(), ampClientKey, "k1")
	if err != nil {
		t.Fatalf("OpenData: %v", err)
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if string(data) != "hello, migrated world" {
		t.Errorf("data = %q", data)
	}
	if diff := cmp.Diff([]string{"sig-1"}, s3.Hits()); diff != "" {
		t.Errorf("S3 hits (-want +got):\n%s", diff)
	}
}

func TestOpenDataReRequestsAnExpiredURLOnce(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		sigs      []string // presigned signatures the product hands out
		expired   map[string]bool
		wantErr   error
		wantS3    []string
		wantAsked int
	}{
		{
			name: "expired once, fresh URL works", status: 403, body: expiredXML,
			sigs: []string{"old", "new"}, expired: map[string]bool{"old": true},
			wantS3: []string{"old", "new"}, wantAsked: 2,
		},
		{
			name: "400 expired, fresh URL works", status: 400, body: "<Error><Message>Request has expired</Message></Error>",
			sigs: []string{"old", "new"}, expired: map[string]bool{"old": true},
			wantS3: []string{"old", "new"}, wantAsked: 2,
		},
		{
			name: "expired twice: no third try", status: 403, body: expiredXML,
			sigs: []string{"a", "b", "c"}, expired: map[string]bool{"a": true, "b": true, "c": true},
			wantErr: ErrDownloadFailed, wantS3: []string{"a", "b"}, wantAsked: 2,
		},
		{
			name: "403 for another reason is not re-requested", status: 403, body: "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
			sigs: []string{"a", "b"}, expired: map[string]bool{"a": true, "b": true},
			wantErr: ErrDownloadFailed, wantS3: []string{"a"}, wantAsked: 1,
		},
		{
			name: "storage outage is transient", status: 503, body: "<Error><Code>SlowDown</Code></Error>",
			sigs: []string{"a"}, expired: map[string]bool{"a": true},
			wantErr: ErrUnavailable, wantS3: []string{"a"}, wantAsked: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setupAMP(t, "/wiki")
			s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.expired[r.URL.Query().Get("X-Amz-Signature")] {
					w.Header().Set("Content-Type", "application/xml")
					w.WriteHeader(tt.status)
					_, _ = io.WriteString(w, tt.body)
					return
				}
				_, _ = io.WriteString(w, "payload")
			})
			b.product.SetHandler(presignHandler(s3, "k", tt.sigs...))
			rc, err := c.OpenData(t.Context(), ampClientKey, "k")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if de, ok := errors.AsType[*DownloadError](err); !ok || de.StatusCode != tt.status {
					t.Errorf("DownloadError = %+v", de)
				}
				for _, sig := range tt.sigs {
					if strings.Contains(err.Error(), sig+"&") || strings.Contains(err.Error(), "Signature="+sig) {
						t.Errorf("error %q leaks the presigned URL", err)
					}
				}
			} else {
				if err != nil {
					t.Fatalf("OpenData: %v", err)
				}
				data, err := io.ReadAll(rc)
				_ = rc.Close()
				if err != nil || string(data) != "payload" {
					t.Errorf("read %q, %v", data, err)
				}
			}
			if diff := cmp.Diff(tt.wantS3, s3.Hits()); diff != "" {
				t.Errorf("S3 hits (-want +got):\n%s", diff)
			}
			if n := len(b.product.Requests()); n != tt.wantAsked {
				t.Errorf("data URL asked %d times, want %d", n, tt.wantAsked)
			}
		})
	}
}

func TestOpenDataNeverLeaksThePresignedURL(t *testing.T) {
	c, b := setupAMP(t, "")
	s3 := newFakeS3(t, func(http.ResponseWriter, *http.Request) {})
	s3.srv.Close() // connection refused
	b.product.SetHandler(presignHandler(s3, "k", "SECRET-SIGNATURE"))
	_, err := c.OpenData(t.Context(), ampClientKey, "k")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "SECRET-SIGNATURE") {
		t.Errorf("error leaks the signature: %v", err)
	}
}

func TestOpenDataStalls(t *testing.T) {
	t.Run("body stops arriving", func(t *testing.T) {
		c, b := setupAMP(t, "", WithStallTimeout(150*time.Millisecond))
		s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000000")
			_, _ = w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		b.product.SetHandler(presignHandler(s3, "k", "s"))
		rc, err := c.OpenData(t.Context(), ampClientKey, "k")
		if err != nil {
			t.Fatalf("OpenData: %v", err)
		}
		defer rc.Close()
		start := time.Now()
		n, err := io.Copy(io.Discard, rc)
		if !errors.Is(err, ErrDownloadStalled) {
			t.Fatalf("read err = %v, want ErrDownloadStalled", err)
		}
		if n != 1000 {
			t.Errorf("read %d bytes before the stall, want 1000", n)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("stall noticed after %s", took)
		}
	})
	t.Run("headers never come", func(t *testing.T) {
		c, b := setupAMP(t, "", WithStallTimeout(150*time.Millisecond))
		s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		b.product.SetHandler(presignHandler(s3, "k", "s"))
		if _, err := c.OpenData(t.Context(), ampClientKey, "k"); !errors.Is(err, ErrDownloadStalled) {
			t.Fatalf("err = %v, want ErrDownloadStalled", err)
		}
	})
	t.Run("a slow consumer is not a stall", func(t *testing.T) {
		c, b := setupAMP(t, "", WithStallTimeout(100*time.Millisecond))
		s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(strings.Repeat("x", 3000)))
		})
		b.product.SetHandler(presignHandler(s3, "k", "s"))
		rc, err := c.OpenData(t.Context(), ampClientKey, "k")
		if err != nil {
			t.Fatalf("OpenData: %v", err)
		}
		defer rc.Close()
		buf := make([]byte, 1000)
		total := 0
		for {
			n, err := rc.Read(buf)
			total += n
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read after %d bytes: %v", total, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if total != 3000 {
			t.Errorf("read %d bytes, want 3000", total)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		c, b := setupAMP(t, "")
		s3 := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		b.product.SetHandler(presignHandler(s3, "k", "s"))
		ctx, cancel := context.WithCancel(t.Context())
		rc, err := c.OpenData(ctx, ampClientKey, "k")
		if err != nil {
			t.Fatalf("OpenData: %v", err)
		}
		defer rc.Close()
		time.AfterFunc(100*time.Millisecond, cancel)
		if _, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestListData(t *testing.T) {
	c, b := setupAMP(t, "")
	b.product.SetHandler(route(t, "", map[string]http.HandlerFunc{
		"GET " + ampBase + "/data/" + testTransferID + "/all": jsonBody(200, []map[string]string{{"label": "part-1", "s3Key": "k1"}, {"label": "final", "s3Key": "k2"}}),
	}))
	got, err := c.ListData(t.Context(), ampClientKey, testTransferID)
	if err != nil {
		t.Fatalf("ListData: %v", err)
	}
	if diff := cmp.Diff([]Upload{{Label: "part-1", S3Key: "k1"}, {Label: "final", S3Key: "k2"}}, got); diff != "" {
		t.Errorf("uploads (-want +got):\n%s", diff)
	}
}

func TestReportProgress(t *testing.T) {
	t.Run("sends the report", func(t *testing.T) {
		c, b := setupAMP(t, "/wiki")
		b.product.SetHandler(route(t, "/wiki", map[string]http.HandlerFunc{
			"POST " + ampBase + "/progress/" + testTransferID: jsonBody(200, map[string]any{"status": "IN_PROGRESS", "percent": 40, "message": "importing"}),
		}))
		if err := c.ReportProgress(t.Context(), ampClientKey, testTransferID, Progress{Status: StatusInProgress, Percent: 40, Message: "importing"}); err != nil {
			t.Fatalf("ReportProgress: %v", err)
		}
		reqs := b.product.Requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests", len(reqs))
		}
		if got := string(reqs[0].Body); got != `{"status":"IN_PROGRESS","percent":40,"message":"importing"}` {
			t.Errorf("body = %s", got)
		}
		if ct := reqs[0].Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	})
	tests := []struct {
		name    string
		status  int
		body    string
		want    []error
		notWant []error
	}{
		{"settled", 403, `{"message":"Transfer '` + testTransferID + `' is already in a settled state"}`, []error{ErrTransferSettled, ErrForbidden}, []error{ErrTransferExpired}},
		{"past 14 days", 400, `{"message":"transfer expired"}`, []error{ErrTransferExpired, ErrBadRequest}, []error{ErrTransferSettled}},
		{"not found", 404, `{}`, []error{ErrNotFound}, []error{ErrTransferSettled, ErrTransferExpired}},
		{"forbidden for another reason", 403, `{"message":"App is not permitted to access this resource"}`, []error{ErrForbidden}, []error{ErrTransferSettled, ErrTransferExpired}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setupAMP(t, "")
			b.product.SetHandler(producttest.JSON(tt.status, tt.body))
			err := c.ReportProgress(t.Context(), ampClientKey, testTransferID, Progress{Status: StatusSuccess, Percent: 100})
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = false", err, w)
				}
			}
			for _, w := range tt.notWant {
				if errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = true", err, w)
				}
			}
			if n := len(b.product.Requests()); n != 1 {
				t.Errorf("%d requests, want 1 (final errors are not retried)", n)
			}
		})
	}
	t.Run("invalid reports are refused locally", func(t *testing.T) {
		c, b := setupAMP(t, "")
		for _, p := range []Progress{{Status: "DONE", Percent: 100}, {Status: StatusInProgress, Percent: 101}, {Status: StatusInProgress, Percent: -1}, {}} {
			if err := c.ReportProgress(t.Context(), ampClientKey, testTransferID, p); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%+v: err = %v, want ErrInvalidArgument", p, err)
			}
		}
		if err := c.ReportProgress(t.Context(), ampClientKey, "", Progress{Status: StatusSuccess}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("empty transfer: err = %v", err)
		}
		if n := len(b.product.Requests()); n != 0 {
			t.Errorf("%d requests made", n)
		}
	})
}

func TestErrorDetails(t *testing.T) {
	c, b := setupAMP(t, "")
	details := `{"exceptionType":"java.lang.IllegalStateException","safeStackTrace":"at com.example.Listener.onStart"}`
	b.product.SetHandler(route(t, "", map[string]http.HandlerFunc{
		"GET " + ampBase + "/error/" + testTransferID: func(w http.ResponseWriter, r *http.Request) {
			producttest.JSON(200, details).ServeHTTP(w, r)
		},
	}))
	got, err := c.ErrorDetails(t.Context(), ampClientKey, testTransferID)
	if err != nil {
		t.Fatalf("ErrorDetails: %v", err)
	}
	if string(got) != details {
		t.Errorf("details = %s", got)
	}
	b.product.SetHandler(producttest.JSON(403, `{"message":"Transfer '`+testTransferID+`' is already in a settled state"}`))
	if _, err := c.ErrorDetails(t.Context(), ampClientKey, testTransferID); !errors.Is(err, ErrTransferSettled) {
		t.Errorf("err = %v, want ErrTransferSettled", err)
	}
}

func TestFeedback(t *testing.T) {
	c, b := setupAMP(t, "/wiki")
	b.product.SetHandler(route(t, "/wiki", map[string]http.HandlerFunc{
		"POST " + ampBase + "/feedback/" + testTransferID: jsonBody(200, map[string]any{}),
	}))
	if err := c.Feedback(t.Context(), ampClientKey, testTransferID, map[string]any{"imported": 12, "skipped": []string{"a"}}); err != nil {
		t.Fatalf("Feedback: %v", err)
	}
	reqs := b.product.Requests()
	if len(reqs) != 1 || string(reqs[0].Body) != `{"details":{"imported":12,"skipped":["a"]}}` {
		t.Errorf("requests = %+v", reqs)
	}
	if err := c.Feedback(t.Context(), ampClientKey, testTransferID, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("nil details: err = %v", err)
	}
}

func TestWebhook(t *testing.T) {
	c, b := setupAMP(t, "")
	var mu sync.Mutex
	var registered []string
	b.product.SetHandler(route(t, "", map[string]http.HandlerFunc{
		"PUT " + ampBase + "/webhook": func(w http.ResponseWriter, r *http.Request) {
			var in struct{ Endpoints []string }
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				t.Errorf("decode: %v", err)
			}
			mu.Lock()
			registered = in.Endpoints
			mu.Unlock()
			jsonBody(200, in)(w, r)
		},
		"GET " + ampBase + "/webhook": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			jsonBody(200, map[string][]string{"endpoints": registered})(w, r)
		},
	}))
	want := []string{"https://relay.example.com/migration/events"}
	if err := c.SetWebhook(t.Context(), ampClientKey, want); err != nil {
		t.Fatalf("SetWebhook: %v", err)
	}
	got, err := c.Webhook(t.Context(), ampClientKey)
	if err != nil {
		t.Fatalf("Webhook: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if body := string(b.product.Requests()[0].Body); body != `{"endpoints":["https://relay.example.com/migration/events"]}` {
		t.Errorf("PUT body = %s", body)
	}
	for _, bad := range [][]string{nil, {}, {"/migration/events"}, {"relay.example.com/x"}, {"ftp://relay.example.com/x"}} {
		if err := c.SetWebhook(t.Context(), ampClientKey, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("SetWebhook(%q): err = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if n := len(b.product.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// mappingPages serves three pages of identity:user mappings and records the
// lastEntity of every call.
func mappingPages(t *testing.T, calls *[]string, mu *sync.Mutex) http.HandlerFunc {
	pages := map[string]string{
		"":                        `{"items":{"email/b@example.com":"acc-2","email/a@example.com":"acc-1"},"meta":{"hasNext":true,"lastEntity":"email/b@example.com","pageSize":2}}`,
		"email/b@example.com":     `{"items":{"email/c@example.com":"acc-3","jira.userkey/JIRAUSER10":"acc-4"},"meta":{"hasNext":true,"lastEntity":"jira.userkey/JIRAUSER10","pageSize":2}}`,
		"jira.userkey/JIRAUSER10": `{"items":{"jira.username/zed":"acc-5"},"meta":{"hasNext":false,"lastEntity":"jira.username/zed","pageSize":2}}`,
	}
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("namespace") != "identity:user" || q.Get("pageSize") != "2" {
			t.Errorf("query = %s", r.URL.RawQuery)
		}
		last := q.Get("lastEntity")
		mu.Lock()
		*calls = append(*calls, last)
		mu.Unlock()
		page, ok := pages[last]
		if !ok {
			t.Errorf("unexpected lastEntity %q", last)
			http.NotFound(w, r)
			return
		}
		producttest.JSON(200, page).ServeHTTP(w, r)
	}
}

func TestMappings(t *testing.T) {
	path := "GET " + ampBase + "/mapping/" + testTransferID + "/page"
	t.Run("all pages", func(t *testing.T) {
		c, b := setupAMP(t, "/wiki")
		var calls []string
		var mu sync.Mutex
		b.product.SetHandler(route(t, "/wiki", map[string]http.HandlerFunc{path: mappingPages(t, &calls, &mu)}))
		var got []Mapping
		for m, err := range c.Mappings(t.Context(), ampClientKey, testTransferID, "identity:user", 2) {
			if err != nil {
				t.Fatalf("Mappings: %v", err)
			}
			got = append(got, m)
		}
		want := []Mapping{
			{"email/a@example.com", "acc-1"}, {"email/b@example.com", "acc-2"},
			{"email/c@example.com", "acc-3"}, {"jira.userkey/JIRAUSER10", "acc-4"},
			{"jira.username/zed", "acc-5"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mappings (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"", "email/b@example.com", "jira.userkey/JIRAUSER10"}, calls); diff != "" {
			t.Errorf("lastEntity per call (-want +got):\n%s", diff)
		}
	})
	t.Run("early break fetches no more pages", func(t *testing.T) {
		c, b := setupAMP(t, "")
		var calls []string
		var mu sync.Mutex
		b.product.SetHandler(route(t, "", map[string]http.HandlerFunc{path: mappingPages(t, &calls, &mu)}))
		n := 0
		for _, err := range c.Mappings(t.Context(), ampClientKey, testTransferID, "identity:user", 2) {
			if err != nil {
				t.Fatalf("Mappings: %v", err)
			}
			n++
			if n == 3 {
				break
			}
		}
		if len(calls) != 2 {
			t.Errorf("%d pages fetched, want 2", len(calls))
		}
	})
	t.Run("hasNext without progress is an error, not a loop", func(t *testing.T) {
		c, b := setupAMP(t, "")
		b.product.SetHandler(producttest.JSON(200, `{"items":{"1":"a"},"meta":{"hasNext":true,"lastEntity":""}}`))
		var errs []error
		items := 0
		for m, err := range c.Mappings(t.Context(), ampClientKey, testTransferID, "jira:issue", 0) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			items++
			if m.CloudID != "a" {
				t.Errorf("mapping = %+v", m)
			}
		}
		if items != 1 || len(errs) != 1 {
			t.Errorf("items %d, errors %v; want 1 item then one error", items, errs)
		}
		if q := b.product.Requests()[0].RawQuery; q != "namespace=jira%3Aissue&pageSize=5000" {
			t.Errorf("query = %s, want the default page size", q)
		}
	})
	t.Run("settled transfer", func(t *testing.T) {
		c, b := setupAMP(t, "")
		b.product.SetHandler(producttest.JSON(403, `{"message":"Transfer '`+testTransferID+`' is already in a settled state"}`))
		for _, err := range c.Mappings(t.Context(), ampClientKey, testTransferID, "jira:issue", 10) {
			if !errors.Is(err, ErrTransferSettled) {
				t.Errorf("err = %v, want ErrTransferSettled", err)
			}
		}
	})
	t.Run("missing namespace", func(t *testing.T) {
		c, _ := setupAMP(t, "")
		for _, err := range c.Mappings(t.Context(), ampClientKey, testTransferID, "", 10) {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
		}
	})
}

func TestFindMappings(t *testing.T) {
	c, b := setupAMP(t, "")
	b.product.SetHandler(route(t, "", map[string]http.HandlerFunc{
		"POST " + ampBase + "/mapping/" + testTransferID + "/find": func(w http.ResponseWriter, r *http.Request) {
			if ns := r.URL.Query().Get("namespace"); ns != "jira:issue" {
				t.Errorf("namespace = %q", ns)
			}
			var keys []string
			if err := json.NewDecoder(r.Body).Decode(&keys); err != nil {
				t.Errorf("decode: %v", err)
			}
			out := map[string]any{}
			for _, k := range keys {
				if k != "missing" {
					out[k] = "cloud-" + k
				}
			}
			if len(keys) > 0 && keys[0] == "10000" {
				out["10000"] = 42 // a numeric id is kept as its text
			}
			jsonBody(200, out)(w, r)
		},
	}))
	keys := []string{"10000"}
	for i := 1; i < 2500; i++ {
		keys = append(keys, fmt.Sprint(10000+i))
	}
	keys = append(keys, "missing")
	got, err := c.FindMappings(t.Context(), ampClientKey, testTransferID, "jira:issue", keys)
	if err != nil {
		t.Fatalf("FindMappings: %v", err)
	}
	if len(got) != 2500 || got["10000"] != "42" || got["12499"] != "cloud-12499" {
		t.Errorf("got %d mappings, 10000=%q 12499=%q", len(got), got["10000"], got["12499"])
	}
	if _, ok := got["missing"]; ok {
		t.Error("unknown key mapped")
	}
	if n := len(b.product.Requests()); n != 3 {
		t.Errorf("%d requests for 2501 keys, want 3", n)
	}
	empty, err := c.FindMappings(t.Context(), ampClientKey, testTransferID, "jira:issue", nil)
	if err != nil || len(empty) != 0 {
		t.Errorf("no keys: %v, %v", empty, err)
	}
	if n := len(b.product.Requests()); n != 3 {
		t.Errorf("no keys made a request")
	}
}

func TestOpenDataRedirects(t *testing.T) {
	plain := newFakeS3(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "plain") })
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("TLS storage got Authorization")
		}
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/here?X-Amz-Signature=s2", http.StatusTemporaryRedirect)
		case "/here":
			_, _ = io.WriteString(w, "tls data")
		case "/downgrade":
			http.Redirect(w, r, plain.presigned("k", "SIG-DOWN"), http.StatusTemporaryRedirect)
		}
	}))
	t.Cleanup(tlsSrv.Close)

	site := producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret})
	hosts, err := connect.NewHostPolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := New(Config{AppKey: testAppKey, Hosts: hosts}, staticTargets{baseURL: site.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	c := NewAMP(pc, tlsSrv.Client(), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	site.SetHandler(jsonBody(200, map[string]string{"url": tlsSrv.URL + "/moved?X-Amz-Signature=s1"}))
	rc, err := c.OpenData(t.Context(), ampClientKey, "k")
	if err != nil {
		t.Fatalf("same-scheme redirect: %v", err)
	}
	data, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(data) != "tls data" {
		t.Errorf("data = %q", data)
	}

	site.SetHandler(jsonBody(200, map[string]string{"url": tlsSrv.URL + "/downgrade?X-Amz-Signature=s1"}))
	_, err = c.OpenData(t.Context(), ampClientKey, "k")
	if err == nil || strings.Contains(err.Error(), "SIG-DOWN") {
		t.Errorf("https->http redirect: err = %v, want a refusal that does not leak the URL", err)
	}
	if n := len(plain.Hits()); n != 0 {
		t.Errorf("plain-http storage received %d requests", n)
	}
}

func TestDataURL_Only403SaysSettledMeansSettled(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		settled bool
	}{
		{"settled", `{"message":"Transfer 'x' is already in a settled state"}`, true},
		{"permission", `{"message":"forbidden"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, b := setupAMP(t, "")
			b.product.SetHandler(producttest.JSON(403, tt.body))
			_, err := c.DataURL(t.Context(), ampClientKey, "some/s3key")
			if !errors.Is(err, ErrForbidden) || errors.Is(err, ErrTransferSettled) != tt.settled {
				t.Errorf("err = %v, want forbidden with settled=%v", err, tt.settled)
			}
		})
	}
}
