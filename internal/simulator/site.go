package simulator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connectrelay/connectrelay/connect"
)

// REST paths of the product API below a site's baseUrl.
const (
	pathAddons    = "/rest/atlassian-connect/1/addons/" // + app key
	pathMigration = "/rest/atlassian-connect/1/migration"
	pathWebhook   = pathMigration + "/webhook"
)

// maxRecordedBody bounds the body kept of each recorded call.
const maxRecordedBody = 4 << 10

// Call is one request the app made to a simulated site, as recorded.
type Call struct {
	At     time.Time
	Site   string
	Method string
	// Path is the path below the site's baseUrl.
	Path   string
	Query  string
	Status int
	// JWT is empty when the token verified, else why it did not.
	JWT  string
	Body []byte
}

// upload is the data of one simulated upload.
type upload struct {
	label string
	size  int64
	// transfer is the transfer it belongs to, when a scenario planned it.
	transfer string
	// downloads counts every presigned GET, complete those that streamed
	// the whole size, authorized those that carried an Authorization header
	// (a presigned URL must not get one).
	downloads, complete, authorized int
}

// tenantState is what Atlassian knows of one installation of the app: shared
// by every baseUrl the site has had (a renamed site is the same site).
type tenantState struct {
	mu            sync.Mutex
	clientKey     string
	secret        string
	oldSecrets    []string
	licenseActive bool
	endpoints     []string // registered migration webhooks; nil = none
	uploads       map[string]*upload
	progress      []string // status/percent of each progress call, in order
	calls         []Call
}

// site is one baseUrl of a tenant: /sites/{name}. A retired site (the baseUrl
// before a rename) records calls as violations.
type site struct {
	name    string
	st      *tenantState
	retired bool
}

// baseURL is the site's product baseUrl.
func (s *Simulator) baseURL(name string) string { return s.origin + "/sites/" + name }

// newSite creates a site with a fresh tenant state.
func (s *Simulator) newSite(clientKey, secret string) (*site, *tenantState) {
	st := &tenantState{clientKey: clientKey, secret: secret, licenseActive: true, uploads: map[string]*upload{}}
	return s.addSite(st), st
}

// addSite gives st another baseUrl.
func (s *Simulator) addSite(st *tenantState) *site {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	name := fmt.Sprintf("%s-%d", s.runID, s.seq)
	si := &site{name: name, st: st}
	s.sites[name] = si
	return si
}

// retire marks a site's baseUrl as left behind (renamed away from).
func (s *Simulator) retire(si *site) {
	s.mu.Lock()
	defer s.mu.Unlock()
	si.retired = true
}

func (s *Simulator) lookup(name string) (*site, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	si, ok := s.sites[name]
	if !ok {
		return nil, false
	}
	return si, si.retired
}

// secrets answers the verifier for one site: the app key's issuer gets the
// tenant's current secret.
type secrets struct {
	appKey string
	secret []byte
}

// SharedSecret returns the current secret for the app key.
func (k secrets) SharedSecret(_ context.Context, iss string, _ bool) ([]byte, error) {
	if iss != k.appKey {
		return nil, fmt.Errorf("issuer %q is not the app key %q: %w", iss, k.appKey, connect.ErrUnknownIssuer)
	}
	return k.secret, nil
}

// verify checks the app's token on r against the site: iss is the app key,
// qsh is the request's relative to the site's baseUrl, exp is in the future
// and at most 3 minutes after iat, and the signature is the tenant's current
// secret. It returns "" or the reason.
func (s *Simulator) verify(r *http.Request, base, appKey, secret string, old []string) string {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "JWT ") {
		return "no Authorization: JWT header"
	}
	check := func(sec string) (*connect.Claims, error) {
		v, err := connect.NewHS256Verifier(connect.HS256Config{
			AppBaseURLs: []string{base}, Secrets: secrets{appKey: appKey, secret: []byte(sec)},
			Leeway: 30 * time.Second, Now: time.Now,
		})
		if err != nil {
			return nil, err
		}
		return v.Verify(r.Context(), r, connect.QSHComputed)
	}
	claims, err := check(secret)
	if err != nil {
		for _, o := range old {
			if _, oerr := check(o); oerr == nil {
				return "signed with a rotated-away secret, not the tenant's current one"
			}
		}
		return "JWT refused: " + err.Error()
	}
	if d := claims.ExpiresAt.Sub(claims.IssuedAt); d > 3*time.Minute {
		return fmt.Sprintf("exp - iat = %s, more than Atlassian's 3 minutes", d)
	}
	return ""
}

func (s *Simulator) serveSite(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("site")
	si, retired := s.lookup(name)
	if si == nil {
		http.NotFound(w, r)
		return
	}
	st := si.st
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	rel := strings.TrimPrefix(r.URL.Path, "/sites/"+name)
	st.mu.Lock()
	secret, old := st.secret, append([]string(nil), st.oldSecrets...)
	st.mu.Unlock()
	c := Call{At: time.Now(), Site: name, Method: r.Method, Path: rel, Query: r.URL.RawQuery, Body: truncateBytes(body)}
	c.JWT = s.verify(r, s.baseURL(name), s.appKeyNow(), secret, old)
	if retired && c.JWT == "" {
		c.JWT = "call to the baseUrl the site had before its rename"
	}
	status, answer := http.StatusUnauthorized, []byte(`{"message":"`+c.JWT+`"}`)
	if c.JWT == "" {
		status, answer = s.answer(st, name, r.Method, rel, body)
	}
	c.Status = status
	st.mu.Lock()
	st.calls = append(st.calls, c)
	st.mu.Unlock()
	note := "JWT ok"
	if c.JWT != "" {
		note = "JWT FAILED: " + c.JWT
	}
	what := r.Method + " " + rel
	if c.Query != "" {
		what += "?" + c.Query
	}
	s.event(actorWorker, actorProduct, what+"  (site "+name+", "+note+")", status, describeBody(r.Method, rel, body))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(answer)
}

// answer plays the product for a verified call.
func (s *Simulator) answer(st *tenantState, siteName, method, rel string, body []byte) (int, []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	switch {
	case method == http.MethodGet && strings.HasPrefix(rel, pathAddons):
		if strings.TrimPrefix(rel, pathAddons) != s.appKeyNow() {
			return http.StatusNotFound, j(map[string]string{"message": "no such app"})
		}
		return http.StatusOK, j(map[string]any{"key": s.appKeyNow(), "version": "1.0.0", "state": "ENABLED",
			"license": map[string]any{"active": st.licenseActive, "type": "commercial", "evaluation": false}})
	case rel == pathWebhook && method == http.MethodGet:
		eps := st.endpoints
		if eps == nil {
			eps = []string{}
		}
		return http.StatusOK, j(map[string]any{"endpoints": eps})
	case rel == pathWebhook && method == http.MethodPut:
		var in struct {
			Endpoints []string `json:"endpoints"`
		}
		if err := json.Unmarshal(body, &in); err != nil || in.Endpoints == nil {
			return http.StatusBadRequest, j(map[string]string{"message": "body must be {\"endpoints\": [...]}"})
		}
		st.endpoints = in.Endpoints
		return http.StatusOK, j(in)
	case method == http.MethodGet && strings.HasPrefix(rel, pathMigration+"/data/") && strings.HasSuffix(rel, "/all"):
		list := []map[string]string{}
		for key, u := range st.uploads {
			list = append(list, map[string]string{"s3Key": key, "label": u.label})
		}
		return http.StatusOK, j(list)
	case method == http.MethodGet && strings.HasPrefix(rel, pathMigration+"/data/"):
		key, _ := url.PathUnescape(strings.TrimPrefix(rel, pathMigration+"/data/"))
		if _, ok := st.uploads[key]; !ok {
			return http.StatusNotFound, j(map[string]string{"message": "no data for this key"})
		}
		return http.StatusOK, j(map[string]string{"url": s.origin + "/s3/" + siteName + "/" + url.PathEscape(key)})
	case method == http.MethodPost && strings.HasPrefix(rel, pathMigration+"/progress/"):
		var in struct {
			Status  string `json:"status"`
			Percent int    `json:"percent"`
		}
		_ = json.Unmarshal(body, &in)
		st.progress = append(st.progress, in.Status+"/"+strconv.Itoa(in.Percent))
		return http.StatusOK, body
	case method == http.MethodGet && strings.HasPrefix(rel, pathMigration+"/error/"):
		return http.StatusOK, j(map[string]string{"exceptionType": "java.lang.IllegalStateException",
			"safeStackTrace": "at com.example.MigrationListener.onStartAppMigration(MigrationListener.java:42)"})
	case method == http.MethodGet && strings.HasPrefix(rel, pathMigration+"/mapping/"):
		return http.StatusOK, j(map[string]any{"meta": map[string]any{"pageSize": 5000, "hasNext": false, "lastEntity": nil},
			"items": map[string]string{}})
	case method == http.MethodPost && strings.HasPrefix(rel, pathMigration+"/mapping/"):
		return http.StatusOK, j(map[string]string{})
	case method == http.MethodPost && strings.HasPrefix(rel, pathMigration+"/feedback/"):
		return http.StatusOK, []byte(`{}`)
	default:
		return http.StatusNotFound, j(map[string]string{"message": "the simulator has no " + method + " " + rel})
	}
}

// serveDownload is the presigned download of an upload: generated bytes,
// streamed, no authentication (a presigned URL carries none).
func (s *Simulator) serveDownload(w http.ResponseWriter, r *http.Request) {
	name, key := r.PathValue("site"), r.PathValue("key")
	if k, err := url.PathUnescape(key); err == nil {
		key = k
	}
	si, _ := s.lookup(name)
	if si == nil {
		http.NotFound(w, r)
		return
	}
	st := si.st
	st.mu.Lock()
	u, ok := st.uploads[key]
	note := ""
	if r.Header.Get("Authorization") != "" {
		note = "carried an Authorization header (a presigned URL must not get one)"
	}
	if ok {
		u.downloads++
		if note != "" {
			u.authorized++
		}
	}
	st.mu.Unlock()
	if !ok {
		s.event(actorWorker, actorStorage, "GET presigned "+key, http.StatusNotFound, note)
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(u.size, 10))
	n, err := writeGenerated(w, key, u.size)
	if err == nil && n == u.size {
		st.mu.Lock()
		u.complete++
		st.mu.Unlock()
	}
	s.event(actorWorker, actorStorage, fmt.Sprintf("GET presigned %s  (%s streamed)", key, humanBytes(n)), http.StatusOK, note)
}

// writeGenerated streams size deterministic bytes derived from key.
func writeGenerated(w io.Writer, key string, size int64) (int64, error) {
	const block = 64 << 10
	buf := make([]byte, block)
	seed := sha256.Sum256([]byte(key))
	for i := 0; i < block; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], binary.LittleEndian.Uint64(seed[i%32:])+uint64(i))
	}
	var n int64
	for n < size {
		chunk := buf
		if rest := size - n; rest < block {
			chunk = buf[:rest]
		}
		m, err := w.Write(chunk)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// describeBody is a short note on a call's body for the timeline.
func describeBody(method, rel string, body []byte) string {
	if len(body) == 0 || method == http.MethodGet {
		return ""
	}
	if rel == pathWebhook || strings.HasPrefix(rel, pathMigration+"/progress/") {
		return strings.TrimSpace(string(truncateBytes(body)))
	}
	return ""
}

func truncateBytes(b []byte) []byte {
	if len(b) > maxRecordedBody {
		return append([]byte(nil), b[:maxRecordedBody]...)
	}
	return append([]byte(nil), b...)
}

// humanBytes renders a byte count.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// ParseSize parses a size such as 512, 64KB, 10MiB, 1G (binary multiples).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: --big %q: want a positive size such as 64MB or 1GiB", ErrConfig, s)
	}
	if n > (1<<40)/mult {
		return 0, fmt.Errorf("%w: --big %q: at most 1 TiB", ErrConfig, s)
	}
	return n * mult, nil
}
