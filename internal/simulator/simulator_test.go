package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

const testAppKey = "com.example.sim-test"

// newTestSimulator starts a simulator whose descriptor is already known.
func newTestSimulator(t *testing.T) *Simulator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{App: "http://127.0.0.1:1"}, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	s.desc = descriptor{Key: testAppKey, BaseURL: "http://127.0.0.1:1"}
	return s
}

// token mints an app->product token with the given claims changes.
func token(t *testing.T, method string, u *url.URL, base, secret string, edit func(jwt.MapClaims)) string {
	t.Helper()
	b, _ := url.Parse(base)
	now := time.Now()
	c := jwt.MapClaims{"iss": testAppKey, "iat": now.Unix(), "exp": now.Add(3 * time.Minute).Unix(),
		"qsh": connect.QSH(method, u, b.EscapedPath())}
	if edit != nil {
		edit(c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSite_VerifiesEveryWorkerCall(t *testing.T) {
	s := newTestSimulator(t)
	si, st := s.newSite("ck-1", "the-current-secret-0123456789abcdef")
	st.oldSecrets = []string{"the-rotated-secret-0123456789abcdef"}
	base := s.baseURL(si.name)
	path := base + pathAddons + testAppKey
	u, _ := url.Parse(path)
	cases := []struct {
		name   string
		auth   func() string
		status int
		reason string
	}{
		{"valid", func() string { return "JWT " + token(t, "GET", u, base, st.secret, nil) }, http.StatusOK, ""},
		{"no header", func() string { return "" }, http.StatusUnauthorized, "no Authorization: JWT header"},
		{"another issuer", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) { c["iss"] = "someone-else" })
		}, http.StatusUnauthorized, "someone-else"},
		{"qsh of another path", func() string {
			other, _ := url.Parse(base + pathWebhook)
			return "JWT " + token(t, "GET", other, base, st.secret, nil)
		}, http.StatusUnauthorized, "qsh"},
		{"qsh hashing the site's base path", func() string {
			b, _ := url.Parse(s.origin)
			return "JWT " + token(t, "GET", u, b.String(), st.secret, nil)
		}, http.StatusUnauthorized, "qsh"},
		{"expired", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) {
				c["iat"], c["exp"] = time.Now().Add(-10*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
			})
		}, http.StatusUnauthorized, "expired"},
		{"lives longer than 3 minutes", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(10 * time.Minute).Unix() })
		}, http.StatusUnauthorized, ""},
		{"the rotated-away secret", func() string { return "JWT " + token(t, "GET", u, base, st.oldSecrets[0], nil) },
			http.StatusUnauthorized, "rotated-away secret"},
		{"an unknown secret", func() string { return "JWT " + token(t, "GET", u, base, "not-the-secret-0123456789abcdef", nil) },
			http.StatusUnauthorized, "JWT refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(st.matching(nil))
			req, _ := http.NewRequest(http.MethodGet, path, nil)
			if a := c.auth(); a != "" {
				req.Header.Set("Authorization", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			calls := st.matching(nil)
			if len(calls) != before+1 {
				t.Fatalf("recorded %d calls, want 1", len(calls)-before)
			}
			got := calls[len(calls)-1]
			if resp.StatusCode != c.status || (c.status == http.StatusOK) != (got.JWT == "") || !strings.Contains(got.JWT, c.reason) {
				t.Errorf("status %d, recorded reason %q; want %d and a reason containing %q", resp.StatusCode, got.JWT, c.status, c.reason)
			}
		})
	}
}

// roundTrip sends req and returns the answer's status and body.
func roundTrip(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSite_AnswersTheProductAPI(t *testing.T) {
	s := newTestSimulator(t)
	si, st := s.newSite("ck-1", "the-current-secret-0123456789abcdef")
	st.uploads["sim/k1"] = &upload{label: "final", size: 300 << 10}
	base := s.baseURL(si.name)
	call := func(method, rel, body string) (int, string) {
		t.Helper()
		u, _ := url.Parse(base + rel)
		req, _ := http.NewRequest(method, u.String(), strings.NewReader(body))
		req.Header.Set("Authorization", "JWT "+token(t, method, u, base, st.secret, nil))
		return roundTrip(t, req)
	}
	if code, body := call("GET", pathAddons+testAppKey, ""); code != 200 || !strings.Contains(body, `"active":true`) {
		t.Errorf("license = %d %s", code, body)
	}
	if code, body := call("PUT", pathWebhook, `{"endpoints":["https://app.example/migration/events"]}`); code != 200 {
		t.Errorf("webhook PUT = %d %s", code, body)
	}
	if code, body := call("GET", pathWebhook, ""); code != 200 || !strings.Contains(body, "https://app.example/migration/events") {
		t.Errorf("webhook GET = %d %s", code, body)
	}
	code, body := call("GET", pathMigration+"/data/"+url.PathEscape("sim/k1"), "")
	var data struct{ URL string }
	if code != 200 || json.Unmarshal([]byte(body), &data) != nil || data.URL == "" {
		t.Fatalf("data URL = %d %s", code, body)
	}
	resp, err := http.Get(data.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var want bytes.Buffer
	_, _ = writeGenerated(&want, "sim/k1", 300<<10)
	complete := settledUpload(st, "sim/k1", 1).complete
	if len(b) != 300<<10 || !bytes.Equal(b, want.Bytes()) || complete != 1 {
		t.Errorf("presigned download: %d bytes (complete %d), want the generated %d", len(b), complete, 300<<10)
	}
	code, _ = call("POST", pathMigration+"/progress/tr-1", `{"status":"SUCCESS","percent":100}`)
	st.mu.Lock()
	progress := append([]string(nil), st.progress...)
	st.mu.Unlock()
	if code != 200 || len(progress) != 1 || progress[0] != "SUCCESS/100" {
		t.Errorf("progress = %d %v", code, progress)
	}
	for _, rel := range []string{pathMigration + "/mapping/tr-1/page?namespace=jira:issue", pathMigration + "/error/tr-1", pathMigration + "/data/tr-1/all"} {
		if code, body := call("GET", rel, ""); code != 200 {
			t.Errorf("GET %s = %d %s", rel, code, body)
		}
	}
	if code, _ := call("POST", pathMigration+"/feedback/tr-1", `{}`); code != 200 {
		t.Errorf("feedback = %d", code)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512", 512, true}, {"64KB", 64 << 10, true}, {"10MiB", 10 << 20, true}, {"1G", 1 << 30, true}, {"2gib", 2 << 30, true},
		{"0", 0, false}, {"-1MB", 0, false}, {"12XB", 0, false}, {"", 0, false}, {"2000GB", 0, false},
	} {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%t", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--big") {
			t.Errorf("ParseSize(%q) error %q does not name --big", c.in, err)
		}
	}
}

func TestPrinter_JSONLinesCarryTheTimelineChecksAndSummary(t *testing.T) {
	var out bytes.Buffer
	p := NewPrinter(&out, true)
	tl := &timeline{name: "install", start: time.Now(), p: p}
	p.start("install", "about")
	p.event(Event{Scenario: "install", Offset: 1500 * time.Millisecond, From: actorAtlassian, To: actorApp, What: "POST /installed", Status: 204})
	tl.expect("the worker read the license", false, "1 call", "0 calls")
	r := tl.result()
	p.result(r)
	p.Summary(Summary{Passed: 0, Failed: 1, Results: []Result{r}})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var types []string
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		types = append(types, m["type"].(string))
	}
	if strings.Join(types, ",") != "scenario,event,check,result,summary" {
		t.Errorf("line types = %v", types)
	}
	if !strings.Contains(lines[1], `"offsetMs":1500`) || !strings.Contains(lines[3], `"reason":"the worker read the license: expected 1 call, seen 0 calls"`) ||
		lines[4] != `{"failed":1,"passed":0,"type":"summary"}` {
		t.Errorf("lines:\n%s", out.String())
	}
}

// newForgeRun is a run of a simulator whose app is app, printing nowhere.
func newForgeRun(t *testing.T, app string) *run {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{App: app, Timeout: 2 * time.Second}, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	tl := &timeline{name: "test", start: time.Now(), p: NewPrinter(io.Discard, false)}
	return &run{s: s, tl: tl}
}

func TestForgeAPI_AnswersServerInfoOnlyToTheSystemTokensItIssued(t *testing.T) {
	r := newForgeRun(t, "http://127.0.0.1:1")
	s := r.s
	fi := r.newForgeInstallation("https://acme.example")
	other := r.newForgeInstallation("")
	tok, otherTok := s.issueSystemToken(fi), s.issueSystemToken(other)
	get := func(rel, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.Origin()+pathForgeAPI+rel, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return roundTrip(t, req)
	}
	serverInfo := "/ex/jira/" + fi.cloudID + pathServerInfo
	if !strings.HasPrefix(s.forgeAPIBase(fi.cloudID)+pathServerInfo, s.Origin()+pathForgeAPI) {
		t.Fatalf("apiBaseUrl %s is not served by the simulator", s.forgeAPIBase(fi.cloudID))
	}
	code, body := get(serverInfo, "Bearer "+tok)
	var info struct{ BaseURL string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &info) != nil || info.BaseURL != "https://acme.example" {
		t.Errorf("serverInfo with the installation's token = %d %s", code, body)
	}
	for _, c := range []struct{ name, auth, reason string }{
		{"no header", "", "no Authorization"},
		{"a token the simulator never issued", "Bearer " + fakeSystemToken(), "not a system token the simulator issued"},
		{"another installation's token", "Bearer " + otherTok, "used for cloudId " + fi.cloudID},
		{"the token as a JWT header", "JWT " + tok, "no Authorization"},
	} {
		before := len(s.forgeCalls(nil))
		code, _ := get(serverInfo, c.auth)
		calls := s.forgeCalls(nil)
		if code != http.StatusUnauthorized || len(calls) != before+1 || !strings.Contains(calls[len(calls)-1].Refused, c.reason) ||
			calls[len(calls)-1].Installation != "" {
			t.Errorf("%s: %d, recorded %+v; want 401 recorded with a reason containing %q", c.name, code, calls[len(calls)-1], c.reason)
		}
	}
	if code, _ := get("/ex/jira/"+fi.cloudID+"/rest/api/3/myself", "Bearer "+tok); code != http.StatusNotFound {
		t.Errorf("an unplayed endpoint = %d, want 404", code)
	}
	if got := s.forgeCalls(isServerInfoOf(fi)); len(got) != 1 {
		t.Errorf("authorized serverInfo calls of the installation = %d, want 1", len(got))
	}
}

// fakeForgeApp is an app's Forge route verifying with the real verifier against
// the simulator's JWKS.
type fakeForgeApp struct {
	t      *testing.T
	v      *forge.Verifier
	before func(n int) int // answers the nth request (from 1) without verifying, when it returns a status
	mu     sync.Mutex
	seen   []seenDelivery
}

type seenDelivery struct {
	claims *forge.Claims
	err    error
	header http.Header
	body   []byte
}

func (a *fakeForgeApp) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	a.mu.Lock()
	n := len(a.seen) + 1
	a.mu.Unlock()
	if a.before != nil {
		if code := a.before(n); code != 0 {
			a.mu.Lock()
			a.seen = append(a.seen, seenDelivery{err: errors.New("not verified"), header: req.Header, body: body})
			a.mu.Unlock()
			w.WriteHeader(code)
			return
		}
	}
	claims, err := a.v.Verify(req.Context(), req, moduleLifecycle, modulePreUninstall, moduleMigration)
	a.mu.Lock()
	a.seen = append(a.seen, seenDelivery{claims: claims, err: err, header: req.Header, body: body})
	a.mu.Unlock()
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *fakeForgeApp) deliveries() []seenDelivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seenDelivery(nil), a.seen...)
}

// newFakeForgeApp serves a fakeForgeApp for a run whose simulator it trusts.
func newFakeForgeApp(t *testing.T, before func(int) int) (*run, *fakeForgeApp) {
	t.Helper()
	a := &fakeForgeApp{t: t, before: before}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	r := newForgeRun(t, srv.URL)
	v, err := forge.NewVerifier(forge.Config{AppID: r.s.ForgeAppID(), JWKSURL: r.s.Origin() + pathForgeJWKS, AllowInsecureJWKS: true,
		APIHosts: []string{"127.0.0.1"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a.v = v
	return r, a
}

func TestForgeDelivery_VerifiesAgainstTheServedJWKSAndCarriesAnIssuedSystemToken(t *testing.T) {
	r, app := newFakeForgeApp(t, nil)
	ctx := context.Background()
	fi := r.newForgeInstallation("")
	send := forgeSend{path: appForgeLifecycle, module: moduleLifecycle, body: r.lifecycleBody(fi, forge.EventInstalled), what: "installed"}
	if rep := r.deliverForge(ctx, fi, send); rep.status != http.StatusNoContent {
		t.Fatalf("installed = %s %s", rep.text(), rep.body)
	}
	send.retry = 1
	if rep := r.deliverForge(ctx, fi, send); rep.status != http.StatusNoContent {
		t.Fatalf("retried installed = %s %s", rep.text(), rep.body)
	}
	got := app.deliveries()
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2", len(got))
	}
	for i, d := range got {
		if d.err != nil {
			t.Fatalf("delivery %d: %v", i, d.err)
		}
		c := d.claims
		if c.App.InstallationID != fi.id || c.CloudID() != fi.cloudID || c.App.APIBaseURL != r.s.forgeAPIBase(fi.cloudID) || c.App.Module.Key != moduleLifecycle {
			t.Errorf("delivery %d claims = %+v", i, c.App)
		}
		r.s.fapi.mu.Lock()
		owner := r.s.fapi.tokens[d.header.Get(forge.SystemTokenHeader)]
		r.s.fapi.mu.Unlock()
		if owner != fi || d.header.Get("X-B3-Traceid") == "" || d.header.Get("X-B3-Spanid") == "" {
			t.Errorf("delivery %d: system token of %v, b3 %q/%q", i, owner, d.header.Get("X-B3-Traceid"), d.header.Get("X-B3-Spanid"))
		}
		event, rc, err := forge.Unwrap(d.body)
		ev, perr := forge.ParseLifecycle(event)
		if err != nil || perr != nil || ev.EventType != forge.EventInstalled || len(ev.Mismatches(c)) != 0 || rc.RetryCount != i {
			t.Errorf("delivery %d body %s: event %+v, retry %+v, %v %v, mismatches %v", i, d.body, ev, rc, err, perr, ev.Mismatches(c))
		}
	}
	if got[0].claims.ID == got[1].claims.ID || got[0].header.Get(forge.SystemTokenHeader) == got[1].header.Get(forge.SystemTokenHeader) {
		t.Error("the retried copy reuses the first delivery's token")
	}
	if !bytes.HasPrefix(got[1].body, []byte(`{"payload":`)) {
		t.Errorf("the retried copy is not in a payload envelope: %s", got[1].body)
	}

	other, err := forgetest.NewIssuer(r.s.ForgeAppID())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		forged *forgetest.Issuer
		edit   func(*forgetest.Token)
		want   error
	}{
		{"another key", other, nil, forge.ErrUnknownKey},
		{"another key under the simulator's kid", other, func(tk *forgetest.Token) { tk.Kid = r.s.forge.Kid() }, forge.ErrSignature},
		{"another app", nil, func(tk *forgetest.Token) {
			tk.Audience, tk.AppExtra = forge.AppARIPrefix+forgetest.NewUUID(), map[string]any{"id": forge.AppARIPrefix + forgetest.NewUUID()}
		}, forge.ErrClaims},
	} {
		send := forgeSend{path: appForgeLifecycle, module: moduleLifecycle, body: r.lifecycleBody(fi, forge.EventInstalled), forged: c.forged, edit: c.edit}
		rep := r.deliverForge(ctx, fi, send)
		all := app.deliveries()
		last := all[len(all)-1]
		if rep.status != http.StatusUnauthorized || !errors.Is(last.err, c.want) {
			t.Errorf("%s: %s, verifier said %v; want 401 for %v", c.name, rep.text(), last.err, c.want)
		}
		r.s.fapi.mu.Lock()
		_, issued := r.s.fapi.tokens[last.header.Get(forge.SystemTokenHeader)]
		r.s.fapi.mu.Unlock()
		if issued {
			t.Errorf("%s: a forged delivery carried a system token the api accepts", c.name)
		}
	}
}

func TestForgeDelivery_RetriesAFirst401OnlyUntilTheAppFetchedTheKeys(t *testing.T) {
	ctx := context.Background()
	t.Run("an app holding an earlier run's keys", func(t *testing.T) {
		// The first request is refused without a JWKS fetch, as an app does
		// whose key set is fresh and whose refresh is not due yet.
		r, app := newFakeForgeApp(t, func(n int) int {
			if n == 1 {
				return http.StatusUnauthorized
			}
			return 0
		})
		fi := r.newForgeInstallation("")
		rep := r.deliverForge(ctx, fi, forgeSend{path: appForgeLifecycle, module: moduleLifecycle, body: r.lifecycleBody(fi, forge.EventInstalled)})
		got := app.deliveries()
		if rep.status != http.StatusNoContent || len(got) != 2 {
			t.Fatalf("%s after %d deliveries, want 204 after 2", rep.text(), len(got))
		}
		if _, rc, _ := forge.Unwrap(got[1].body); rc.RetryCount != 1 || rc.RetryReason != "INVALID_FORGE_INVOCATION_TOKEN" {
			t.Errorf("the retry's retryContext = %+v", rc)
		}
	})
	t.Run("an app that fetched the keys and still refuses", func(t *testing.T) {
		r, app := newFakeForgeApp(t, nil)
		if err := app.v.Warm(ctx); err != nil {
			t.Fatal(err)
		}
		fi := r.newForgeInstallation("")
		start := time.Now()
		rep := r.deliverForge(ctx, fi, forgeSend{path: appForgeLifecycle, module: "a-module-of-another-route", body: r.lifecycleBody(fi, forge.EventInstalled)})
		if rep.status != http.StatusUnauthorized || len(app.deliveries()) != 1 || time.Since(start) > time.Second {
			t.Errorf("%s after %d deliveries in %s, want one 401 at once", rep.text(), len(app.deliveries()), time.Since(start))
		}
	})
}

// settledUpload returns the upload key of st once its complete count reaches
// want, or as it is after two seconds: the storage handler counts a complete
// download after its last write, which the client may have read already.
func settledUpload(st *tenantState, key string, want int) upload {
	deadline := time.Now().Add(2 * time.Second)
	for {
		st.mu.Lock()
		u := *st.uploads[key]
		st.mu.Unlock()
		if u.complete >= want || time.Now().After(deadline) {
			return u
		}
		time.Sleep(5 * time.Millisecond)
	}
}
