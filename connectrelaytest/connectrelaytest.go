// Package connectrelaytest helps a vendor test their hooks (an
// [connectrelay.Initializer], an [connectrelay.Importer]) without a real
// Atlassian site: it runs a fake product for one tenant on loopback, hands out
// the requests the worker would pass to the hooks, and records what the hooks
// did at the product.
//
// The fake is strict where the product is: every call must carry the app's JWT
// for the tenant's secret, with the right qsh, or the test fails. It serves the
// App Migration Platform API (data URLs and the storage behind them, mappings,
// feedback, progress) and whatever REST endpoints the test adds with Handle.
//
//	p := connectrelaytest.New(t, connectrelaytest.Options{})
//	p.SetData("k1", []byte(`{"id":"10000"}`))
//	p.SetMappings("jira:issue", map[string]string{"10000": "20000"})
//	err := myImporter.Import(ctx, p.ImportRequest(t, "transfer-1", "k1", "final"))
package connectrelaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/product"
	"github.com/connectrelay/connectrelay/product/producttest"
)

// Options describe the fake tenant; zero values take the defaults.
type Options struct {
	// AppKey is the app's key, the iss of the JWTs it sends. Default
	// "com.example.app".
	AppKey string
	// ClientKey is the tenant's clientKey. Default "jira:connectrelaytest".
	ClientKey string
	// Secret is the tenant's shared secret. Default a fixed test value.
	Secret string
	// BasePath is the site's context path: "" for Jira, "/wiki" for Confluence.
	BasePath string
}

// Product is a running fake product site of one tenant. It is closed when the
// test ends.
type Product struct {
	opts    Options
	site    *producttest.Server
	storage *httptest.Server
	client  *product.Client
	amp     *product.AMP

	mu       sync.Mutex
	mux      *http.ServeMux
	data     map[string][]byte
	mappings map[string]map[string]string
	feedback map[string][]json.RawMessage
	progress map[string][]product.Progress
}

// New starts the fake product and its storage server on 127.0.0.1.
func New(t testing.TB, opts Options) *Product {
	t.Helper()
	if opts.AppKey == "" {
		opts.AppKey = "com.example.app"
	}
	if opts.ClientKey == "" {
		opts.ClientKey = "jira:connectrelaytest"
	}
	if opts.Secret == "" {
		opts.Secret = "connectrelaytest-shared-secret-0123456789abcdef"
	}
	p := &Product{
		opts: opts, mux: http.NewServeMux(), data: map[string][]byte{},
		mappings: map[string]map[string]string{}, feedback: map[string][]json.RawMessage{},
		progress: map[string][]product.Progress{},
	}
	p.storage = httptest.NewServer(http.HandlerFunc(p.serveStorage(t)))
	t.Cleanup(p.storage.Close)
	p.site = producttest.New(t, producttest.Config{
		AppKey: opts.AppKey, Secret: []byte(opts.Secret), BasePath: opts.BasePath,
		Handler: http.StripPrefix(opts.BasePath, http.HandlerFunc(p.serveSite)),
	})
	hosts, err := connect.NewHostPolicy([]string{"127.0.0.1"})
	if err != nil {
		t.Fatalf("connectrelaytest: host policy: %v", err)
	}
	logger := slog.New(slog.DiscardHandler)
	p.client, err = product.New(product.Config{
		AppKey: opts.AppKey, Hosts: hosts, MaxAttempts: 2, BackoffBase: 10 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond, Logger: logger,
	}, p)
	if err != nil {
		t.Fatalf("connectrelaytest: product client: %v", err)
	}
	p.amp = product.NewAMP(p.client, nil, product.WithLogger(logger), product.WithStallTimeout(10*time.Second))
	return p
}

// Target implements product.TargetSource for the one tenant.
func (p *Product) Target(_ context.Context, clientKey string) (product.Target, error) {
	if clientKey != p.opts.ClientKey {
		return product.Target{}, fmt.Errorf("connectrelaytest: no tenant %q (the fake's tenant is %q)", clientKey, p.opts.ClientKey)
	}
	return product.Target{ClientKey: clientKey, BaseURL: p.site.BaseURL(), Secret: []byte(p.opts.Secret)}, nil
}

// Tenant is the fake's tenant, installed and enabled, as the worker gives it to
// a hook.
func (p *Product) Tenant() connectrelay.Tenant {
	now := time.Now().UTC()
	return connectrelay.Tenant{
		HostInfo: connectrelay.HostInfo{
			ClientKey: p.opts.ClientKey, AppKey: p.opts.AppKey, BaseURL: p.site.BaseURL(), DisplayURL: p.site.BaseURL(),
			ProductType: "jira", Extra: json.RawMessage(`{}`),
		},
		Installed: true, Enabled: true, FirstInstalledAt: now, LastInstalledAt: now, LastLifecycleAt: now,
		DataIssuedAt: now, InstalledIssuedAt: now, EnabledIssuedAt: now, LicenseState: connectrelay.LicenseUnknown,
	}
}

// Client is the product client the worker gives hooks, bound to the fake.
func (p *Product) Client() *product.Client { return p.client }

// AMP is the migration API client the worker gives importers, bound to the fake.
func (p *Product) AMP() *product.AMP { return p.amp }

// InitRequest is what the worker passes an Initializer for the fake's tenant.
func (p *Product) InitRequest() *connectrelay.InitRequest {
	return &connectrelay.InitRequest{Tenant: p.Tenant(), Product: p.client}
}

// ImportRequest is what the worker passes an Importer for one upload of a
// transfer of the fake's tenant: its data is streamed from the fake storage
// through the real download path. The stream is closed when the test ends. The
// test fails if the data cannot be opened (see SetData).
func (p *Product) ImportRequest(t testing.TB, transferID, s3Key, label string) *connectrelay.ImportRequest {
	t.Helper()
	rc, err := p.amp.OpenData(context.Background(), p.opts.ClientKey, s3Key)
	if err != nil {
		t.Fatalf("connectrelaytest: open upload %q: %v", s3Key, err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	now := time.Now().UTC()
	return &connectrelay.ImportRequest{
		Transfer: connectrelay.Transfer{
			TransferID: transferID, ClientKey: p.opts.ClientKey, State: connectrelay.TransferReady,
			Details:   connectrelay.MigrationDetails{MigrationID: "migration-" + transferID, JiraClientKey: p.opts.ClientKey},
			CreatedAt: now, UpdatedAt: now, ReadyAt: now,
		},
		Label: label, S3Key: s3Key, Data: rc, Attempt: 1, AMP: p.amp,
	}
}

// SetData makes s3Key an upload whose content is data.
func (p *Product) SetData(s3Key string, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.data[s3Key] = data
}

// SetMappings sets the server-to-cloud mappings of namespace.
func (p *Product) SetMappings(namespace string, m map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mappings[namespace] = maps.Clone(m)
}

// Handle answers verified requests matching pattern (net/http ServeMux syntax,
// paths relative to the base path, e.g. "GET /rest/api/3/myself") with h.
func (p *Product) Handle(pattern string, h http.Handler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mux.Handle(pattern, h)
}

// Requests returns every verified request the site received, in order.
func (p *Product) Requests() []producttest.Request { return p.site.Requests() }

// Feedback returns the feedback details sent for a transfer, in order.
func (p *Product) Feedback(transferID string) []json.RawMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.feedback[transferID])
}

// Progress returns the progress reports sent for a transfer, in order.
func (p *Product) Progress(transferID string) []product.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.progress[transferID])
}

const migrationAPI = "/rest/atlassian-connect/1/migration/"

// serveSite answers the migration API and, for anything else, the test's
// handlers (404 when none matches).
func (p *Product) serveSite(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	rest, isMigration := strings.CutPrefix(path, migrationAPI)
	if !isMigration {
		p.mu.Lock()
		mux := p.mux
		p.mu.Unlock()
		mux.ServeHTTP(w, r)
		return
	}
	parts := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "data":
		key, _ := url.PathUnescape(parts[1])
		p.mu.Lock()
		_, ok := p.data[key]
		p.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "no data for " + key})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"url": p.storage.URL + "/bucket/" + parts[1] + "?X-Amz-Signature=test"})
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "data" && parts[2] == "all":
		p.mu.Lock()
		var list []product.Upload
		for _, k := range slices.Sorted(maps.Keys(p.data)) {
			list = append(list, product.Upload{S3Key: k})
		}
		p.mu.Unlock()
		writeJSON(w, http.StatusOK, list)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "mapping" && parts[2] == "page":
		p.serveMappingPage(w, r)
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "mapping" && parts[2] == "find":
		var keys []string
		if err := json.NewDecoder(r.Body).Decode(&keys); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		p.mu.Lock()
		found := map[string]string{}
		for _, k := range keys {
			if v, ok := p.mappings[r.URL.Query().Get("namespace")][k]; ok {
				found[k] = v
			}
		}
		p.mu.Unlock()
		writeJSON(w, http.StatusOK, found)
	case r.Method == http.MethodPost && len(parts) == 2 && parts[0] == "feedback":
		var body struct {
			Details json.RawMessage `json:"details"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		p.mu.Lock()
		p.feedback[parts[1]] = append(p.feedback[parts[1]], body.Details)
		p.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodPost && len(parts) == 2 && parts[0] == "progress":
		var pr product.Progress
		_ = json.NewDecoder(r.Body).Decode(&pr)
		p.mu.Lock()
		p.progress[parts[1]] = append(p.progress[parts[1]], pr)
		p.mu.Unlock()
		writeJSON(w, http.StatusOK, pr)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "connectrelaytest: no such migration API call: " + r.Method + " " + path})
	}
}

// serveMappingPage serves a namespace's mappings in server ID order, pageSize at a time.
func (p *Product) serveMappingPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("pageSize"))
	if err != nil || size < 1 || size > product.MaxPageSize {
		size = product.MaxPageSize
	}
	p.mu.Lock()
	m := p.mappings[q.Get("namespace")]
	keys := slices.Sorted(maps.Keys(m))
	p.mu.Unlock()
	start := 0
	if last := q.Get("lastEntity"); last != "" {
		start, _ = slices.BinarySearch(keys, last)
		if start < len(keys) && keys[start] == last {
			start++
		}
	}
	end := min(start+size, len(keys))
	items := map[string]string{}
	for _, k := range keys[start:end] {
		items[k] = m[k]
	}
	meta := map[string]any{"hasNext": end < len(keys), "pageSize": size}
	if end > start {
		meta["lastEntity"] = keys[end-1]
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "meta": meta})
}

// serveStorage plays the storage behind presigned URLs; the app's JWT must
// never reach it.
func (p *Product) serveStorage(t testing.TB) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("connectrelaytest: the presigned download carried an Authorization header")
		}
		key, err := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), "/bucket/"))
		p.mu.Lock()
		data, ok := p.data[key]
		p.mu.Unlock()
		if err != nil || !ok {
			http.Error(w, "NoSuchKey", http.StatusNotFound)
			return
		}
		_, _ = w.Write(data)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
