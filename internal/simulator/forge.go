package simulator

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

// The simulator plays Forge on the same listener as the rest:
//
//	/forge/jwks.json                        the JWKS of the simulator's FIT key (FORGE_JWKS_URL)
//	/api/ex/{product}/{cloudId}/rest/...    api.atlassian.com: an installation's apiBaseUrl is http://ADDR/api/ex/jira/{cloudId}
//	/app/migration/forge/v1/...             the Forge migration API, at the apiBaseUrl's host (forge_migration.go)
//
// Its Forge app id is fixed (DefaultForgeAppID, or --forge-app-id), because
// the app reads FORGE_APP_ID at start-up; its signing key and kid are fresh
// each run, like the install key, because the app fetches the JWKS from
// FORGE_JWKS_URL when it meets an unknown kid.
//
// forge-migration (forge_migration.go) sends avi:ecosystem.migration:*
// events with deliverForge and plays the Forge migration API in
// serveForgeAPI.

// DefaultForgeAppID is the Forge app the simulator plays unless told
// another (--forge-app-id): the app under test must have it as FORGE_APP_ID.
const DefaultForgeAppID = forge.AppARIPrefix + "c0ffee00-5170-4ac7-9e1a-000000000001"

// Paths of the simulated Forge on the listener.
const (
	pathForgeJWKS  = "/forge/jwks.json"
	pathForgeAPI   = "/api"
	pathServerInfo = "/rest/api/3/serverInfo"
)

// Paths of the app's Forge routes (handlers.PathForgeLifecycle and
// handlers.PathForgePreUninstall, which the simulator does not import: it
// sees the app through HTTP only).
const (
	appForgeLifecycle    = "/forge/lifecycle"
	appForgePreUninstall = "/forge/pre-uninstall"
)

// Module keys of the simulated manifest's endpoints, the app.module.key of
// the tokens of each route (FORGE_LIFECYCLE_MODULE_KEYS and
// FORGE_PREUNINSTALL_MODULE_KEYS may name them).
const (
	moduleLifecycle    = "lifecycle-endpoint"
	modulePreUninstall = "pre-uninstall-endpoint"
)

// forgeKeyWait bounds the retries of the first delivery signed with a run's
// key while the app answers 401: an app that holds the key set of an earlier
// run fetches the JWKS again at most every forge.DefaultMinRefresh.
const forgeKeyWait = forge.DefaultMinRefresh + 5*time.Second

// forgeInstallation is one simulated Forge installation of the app.
type forgeInstallation struct {
	id, cloudID string
	// version is the app version of its next tokens.
	version string
	// siteURL is what serverInfo answers as the site's baseUrl.
	siteURL string
	// data is the site created for the installation (nil when it was given
	// one): where the uploads of its migrations are stored.
	data *site
}

// ForgeCall is one request the app made to the simulated api.atlassian.com.
type ForgeCall struct {
	At     time.Time
	Method string
	// Path is the path below /api (e.g. /ex/jira/{cloudId}/rest/api/3/serverInfo),
	// or the whole path of a call to the Forge migration API
	// (/app/migration/forge/v1/...).
	Path string
	// Installation is the installation whose system token the call carried;
	// "" when it carried none the simulator issued.
	Installation string
	// Refused is empty when the call was authorized, else why not.
	Refused string
	Status  int
}

// forgeAPI is the state of the simulated api.atlassian.com.
type forgeAPI struct {
	mu     sync.Mutex
	tokens map[string]*forgeInstallation // the system tokens handed out
	calls  []ForgeCall
	// transfers are the Forge migrations played, by transferId, and keys
	// their uploads, by key.
	transfers, keys map[string]*forgeTransfer
	// keyAccepted is set once the app accepted a token of this run's key;
	// keyWaited once the first delivery's 401 retries ran out.
	keyAccepted, keyWaited bool
}

// ForgeAppID is the app ARI the simulator signs FITs for.
func (s *Simulator) ForgeAppID() string { return s.forge.AppID() }

// forgeAPIBase is the apiBaseUrl of the installation on cloudID.
func (s *Simulator) forgeAPIBase(cloudID string) string {
	return s.origin + pathForgeAPI + "/ex/jira/" + cloudID
}

// serveJWKS is Forge's JWKS: the public key of this run's FIT signing key.
func (s *Simulator) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.event(actorApp, actorForgeJWKS, "GET "+pathForgeJWKS+"  (kid "+s.forge.Kid()+")", http.StatusOK, "")
	s.forge.Handler().ServeHTTP(w, r)
}

// issueSystemToken hands out a fresh app system token for fi: opaque to the
// app, JWT-shaped with an exp 3 hours away, as Atlassian's are.
func (s *Simulator) issueSystemToken(fi *forgeInstallation) string {
	tok := fakeSystemToken()
	s.fapi.mu.Lock()
	s.fapi.tokens[tok] = fi
	s.fapi.mu.Unlock()
	return tok
}

// fakeSystemToken is a system token no api will accept unless it is
// registered as issued.
func fakeSystemToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"connectctl-simulate/system"}`)) + "." +
		enc(fmt.Appendf(nil, `{"exp":%d,"jti":%q,"sub":"app-system"}`, time.Now().Add(3*time.Hour).Unix(), forgetest.NewUUID())) + "." +
		enc([]byte(randomHex(32)))
}

// serveForgeAPI plays api.atlassian.com for the installations' system
// tokens: Jira's serverInfo through an apiBaseUrl, and the Forge migration
// API at the apiBaseUrl's host (forge_migration.go), to a token issued for
// that installation only. Every call is recorded.
func (s *Simulator) serveForgeAPI(w http.ResponseWriter, r *http.Request) {
	rel := strings.TrimPrefix(r.URL.Path, pathForgeAPI)
	migrationAPI := strings.HasPrefix(r.URL.Path, pathForgeMigrationAPI+"/")
	if migrationAPI {
		rel = r.URL.Path
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.fapi.mu.Lock()
	fi := s.fapi.tokens[tok]
	s.fapi.mu.Unlock()
	c := ForgeCall{At: time.Now(), Method: r.Method, Path: rel}
	status, answer := http.StatusOK, ""
	product, cloud, rest := splitAPIPath(rel)
	switch {
	case !bearer || tok == "":
		c.Refused = "no Authorization: Bearer header"
	case fi == nil:
		c.Refused = "not a system token the simulator issued"
	case product != "" && cloud != fi.cloudID:
		c.Refused = "the system token of installation " + fi.id + " used for cloudId " + cloud
	}
	note := ""
	if c.Refused == "" && migrationAPI {
		status, answer, note, c.Refused = s.answerForgeMigration(fi, r.Method, strings.TrimPrefix(r.URL.EscapedPath(), pathForgeMigrationAPI+"/"), body)
	}
	if fi != nil && c.Refused == "" {
		c.Installation = fi.id
	}
	switch {
	case c.Refused != "":
		status, answer = http.StatusUnauthorized, jsonString(map[string]string{"message": c.Refused})
	case migrationAPI:
	case r.Method == http.MethodGet && product == "jira" && rest == pathServerInfo:
		answer = jsonString(map[string]any{"baseUrl": fi.siteURL, "displayUrl": fi.siteURL, "version": "1001.0.0-SNAPSHOT",
			"deploymentType": "Cloud", "serverTitle": "Jira (simulated)"})
	default:
		status, answer = http.StatusNotFound, jsonString(map[string]string{"message": "the simulator has no " + r.Method + " " + rel})
	}
	c.Status = status
	s.fapi.mu.Lock()
	s.fapi.calls = append(s.fapi.calls, c)
	s.fapi.mu.Unlock()
	who := "system token of " + c.Installation
	if c.Refused != "" {
		who = "REFUSED: " + c.Refused
	}
	s.event(actorWorker, actorForgeAPI, r.Method+" "+rel+"  ("+who+")", status, note)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(answer))
}

// splitAPIPath splits /ex/{product}/{cloudId}{rest}; all "" when rel is not
// of that form.
func splitAPIPath(rel string) (product, cloud, rest string) {
	p, ok := strings.CutPrefix(rel, "/ex/")
	if !ok {
		return "", "", ""
	}
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 3 {
		return "", "", ""
	}
	return parts[0], parts[1], "/" + parts[2]
}

// forgeCalls returns the recorded api calls matching pred.
func (s *Simulator) forgeCalls(pred func(ForgeCall) bool) []ForgeCall {
	s.fapi.mu.Lock()
	defer s.fapi.mu.Unlock()
	var out []ForgeCall
	for _, c := range s.fapi.calls {
		if pred == nil || pred(c) {
			out = append(out, c)
		}
	}
	return out
}

// isServerInfoOf matches the authorized serverInfo calls of fi.
func isServerInfoOf(fi *forgeInstallation) func(ForgeCall) bool {
	return func(c ForgeCall) bool {
		return c.Installation == fi.id && c.Method == http.MethodGet && strings.HasSuffix(c.Path, "/"+fi.cloudID+pathServerInfo)
	}
}

// newForgeInstallation is a fresh installation; its serverInfo answers
// siteURL, or a fresh simulated site's baseUrl when empty.
func (r *run) newForgeInstallation(siteURL string) *forgeInstallation {
	var si *site
	if siteURL == "" {
		si, _ = r.s.newSite("", newSecret())
		siteURL = r.s.baseURL(si.name)
	}
	return &forgeInstallation{id: forgetest.NewInstallationID(), cloudID: forgetest.NewCloudID(), version: "1.0.0", siteURL: siteURL, data: si}
}

// forgeSend is one delivery Forge makes to the app.
type forgeSend struct {
	path, module string
	body         map[string]any
	// retry is the retryContext.retryCount of a re-sent copy: the body is
	// then wrapped as {"payload": ...} with a retryContext, as Atlassian's
	// retry example shows; retryReason is its reason (TIMEOUT_ERROR when
	// empty).
	retry       int
	retryReason string
	// forged signs with another issuer and edits the token, and sends a
	// system token the api does not know: a delivery the app must refuse.
	forged *forgetest.Issuer
	edit   func(*forgetest.Token)
	what   string
}

// deliverForge sends fs for fi with a freshly minted FIT and system token,
// as Forge (and each of its retries) does, and puts it on the timeline.
//
// A 401 to a genuine token before the app fetched this run's JWKS means the
// app may hold an earlier run's key set, which it refreshes at most every
// forge.DefaultMinRefresh: Forge retries a 401 (INVALID_FORGE_INVOCATION_TOKEN),
// so the simulator does too, once per run, until the app has fetched the
// JWKS and answered again, or forgeKeyWait has passed.
func (r *run) deliverForge(ctx context.Context, fi *forgeInstallation, fs forgeSend) reply {
	rep := r.sendForge(ctx, fi, fs)
	genuine := fs.forged == nil && fs.edit == nil
	if !genuine || rep.err != nil || rep.status != http.StatusUnauthorized || r.s.forge.FetchCount() > 0 || !r.s.mayWaitForKey() {
		r.s.noteKeyAccepted(rep)
		return rep
	}
	r.note(fmt.Sprintf("the app refused this run's first FIT (kid %s) without fetching %s: it may hold an earlier run's keys, "+
		"which it refreshes at most every %s; retrying as Forge does. If this persists, the app's FORGE_JWKS_URL is not %s",
		r.s.forge.Kid(), pathForgeJWKS, forge.DefaultMinRefresh, r.s.origin+pathForgeJWKS))
	deadline := time.Now().Add(forgeKeyWait)
	for n := 1; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		fetched := r.s.forge.FetchCount() > 0
		again := fs
		again.retry, again.retryReason = n, "INVALID_FORGE_INVOCATION_TOKEN"
		again.what = fs.what + " (Forge's retry after the 401)"
		rep = r.sendForge(ctx, fi, again)
		if rep.err != nil || rep.status != http.StatusUnauthorized || fetched {
			break
		}
	}
	r.s.noteKeyAccepted(rep)
	return rep
}

// mayWaitForKey reports whether the first delivery's 401 is retried: once
// per simulator, before any token of its key was accepted.
func (s *Simulator) mayWaitForKey() bool {
	s.fapi.mu.Lock()
	defer s.fapi.mu.Unlock()
	if s.fapi.keyAccepted || s.fapi.keyWaited {
		return false
	}
	s.fapi.keyWaited = true
	return true
}

func (s *Simulator) noteKeyAccepted(rep reply) {
	if rep.err == nil && rep.status < 300 {
		s.fapi.mu.Lock()
		s.fapi.keyAccepted = true
		s.fapi.mu.Unlock()
	}
}

// sendForge mints and sends one delivery.
func (r *run) sendForge(ctx context.Context, fi *forgeInstallation, fs forgeSend) reply {
	tok := forgetest.Token{InstallationID: fi.id, CloudID: fi.cloudID, APIBaseURL: r.s.forgeAPIBase(fi.cloudID),
		AppVersion: fi.version, ModuleKey: fs.module}
	iss := r.s.forge
	if fs.forged != nil {
		iss = fs.forged
	}
	if fs.edit != nil {
		fs.edit(&tok)
	}
	body := any(fs.body)
	if fs.retry > 0 {
		payload := make(map[string]any, len(fs.body)+1)
		for k, v := range fs.body {
			payload[k] = v
		}
		reason := fs.retryReason
		if reason == "" {
			reason = "TIMEOUT_ERROR"
		}
		payload["retryContext"] = map[string]any{"retryData": nil, "retryCount": fs.retry, "retryReason": reason}
		body = map[string]any{"payload": payload}
	}
	system := fakeSystemToken()
	if fs.forged == nil && fs.edit == nil {
		system = r.s.issueSystemToken(fi)
	}
	rep := r.s.post(ctx, r.s.cfg.App+fs.path, body, func(req *http.Request) (string, error) {
		fit, err := iss.Mint(tok)
		if err != nil {
			return "", fmt.Errorf("mint FIT: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+fit)
		req.Header.Set(forge.SystemTokenHeader, system)
		req.Header.Set("X-B3-Traceid", randomHex(16))
		req.Header.Set("X-B3-Spanid", randomHex(8))
		return fit, nil
	})
	note := ""
	switch {
	case rep.err != nil:
		note = "no answer: " + rep.err.Error()
	case rep.status == http.StatusNotFound || rep.status == http.StatusMethodNotAllowed:
		note = "the app does not serve " + fs.path + ": start it with FORGE_APP_ID, FORGE_JWKS_URL and FORGE_API_HOSTS of connectctl simulate --print-env"
	case rep.status >= 300 && rep.body != "":
		note = "answer: " + truncateString(rep.body, 160)
	}
	what := fmt.Sprintf("POST %s  %s, installation %s", fs.path, fs.what, fi.id)
	if fs.retry > 0 {
		what += fmt.Sprintf(", retryCount %d", fs.retry)
	}
	r.s.event(actorForge, actorApp, what, rep.status, note)
	return rep
}

// lifecycleBody is the avi:forge:* lifecycle body Forge sends for fi.
func (r *run) lifecycleBody(fi *forgeInstallation, eventType string) map[string]any {
	b := map[string]any{
		"eventType":   eventType,
		"id":          strings.TrimPrefix(fi.id, forge.InstallationARIPrefix),
		"context":     "ari:cloud:jira::site/" + fi.cloudID,
		"app":         map[string]any{"id": r.s.forge.AppUUID(), "version": fi.version, "name": "connectctl simulate"},
		"environment": map[string]any{"id": r.s.forge.EnvironmentID()[strings.LastIndex(r.s.forge.EnvironmentID(), "/")+1:]},
	}
	if eventType == forge.EventUpgraded {
		b["upgraderAccountId"] = "557058:simulated-admin"
	} else {
		b["installerAccountId"] = "557058:simulated-admin"
	}
	return b
}

// preUninstallBody is the preUninstall module's payload as documented for
// a function (what a remote endpoint receives is UNCONFIRMED).
func preUninstallBody(fi *forgeInstallation) map[string]any {
	return map[string]any{"context": map[string]any{"cloudId": fi.cloudID, "moduleKey": modulePreUninstall}}
}

// deliverTwice sends a delivery and, right after, Forge's retried copy of
// it (a new token, the body in a payload envelope with a retryContext); it
// checks both answered 204 and returns whether they did.
func (r *run) deliverTwice(ctx context.Context, fi *forgeInstallation, fs forgeSend, name string) bool {
	ok := r.expectStatus(name+" answered", r.deliverForge(ctx, fi, fs), http.StatusNoContent)
	if !ok {
		return false
	}
	fs.retry = 1
	fs.what += " (retried copy, a new token)"
	return r.expectStatus(name+"'s retried copy answered", r.deliverForge(ctx, fi, fs), http.StatusNoContent)
}

// forgeInstalled delivers avi:forge:installed:app for fi and its retried
// copy, and checks what follows: the worker asks serverInfo once with the
// installation's system token, and the app records the installation with
// the site URL it learnt (internal API).
func (r *run) forgeInstalled(ctx context.Context, fi *forgeInstallation) bool {
	if !r.deliverTwice(ctx, fi, forgeSend{path: appForgeLifecycle, module: moduleLifecycle,
		body: r.lifecycleBody(fi, forge.EventInstalled), what: forge.EventInstalled}, "installed") {
		return false
	}
	return r.expectServerInfo(ctx, fi)
}

// expectServerInfo waits for the worker's serverInfo call of fi and checks
// it was made once, with a system token issued for fi.
func (r *run) expectServerInfo(ctx context.Context, fi *forgeInstallation) bool {
	got := r.waitForgeCalls(ctx, 1, isServerInfoOf(fi))
	ok := r.tl.expect("the worker asked serverInfo with the installation's system token", len(got) >= 1,
		fmt.Sprintf("GET %s with a system token issued for %s within %s", r.s.forgeAPIBase(fi.cloudID)+pathServerInfo, fi.id, r.s.cfg.Timeout),
		plural(len(got), "authorized call")+r.forgeRefusedNote())
	if !ok {
		return false
	}
	r.quiet()
	got = r.s.forgeCalls(isServerInfoOf(fi))
	return r.tl.expect("serverInfo was asked once (the retried copy started no second initialization)", len(got) == 1,
		"1 call", plural(len(got), "call"))
}

// waitForgeCalls waits until at least n api calls match pred, up to the timeout.
func (r *run) waitForgeCalls(ctx context.Context, n int, pred func(ForgeCall) bool) []ForgeCall {
	deadline := time.Now().Add(r.s.cfg.Timeout)
	for {
		got := r.s.forgeCalls(pred)
		if len(got) >= n || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forgeRefusedNote names the api calls of the scenario the simulator refused.
func (r *run) forgeRefusedNote() string {
	bad := r.s.forgeCalls(func(c ForgeCall) bool { return c.Refused != "" && !c.At.Before(r.tl.start) })
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s refused: %s %s: %s)", plural(len(bad), "call"), bad[0].Method, bad[0].Path, bad[0].Refused)
}

// expectForgeAPIClean checks every call to the api during the scenario
// carried a system token the simulator issued, for the installation of the
// path.
func (r *run) expectForgeAPIClean() bool {
	all := r.s.forgeCalls(func(c ForgeCall) bool { return !c.At.Before(r.tl.start) })
	var bad []string
	for _, c := range all {
		if c.Refused != "" {
			bad = append(bad, fmt.Sprintf("%s %s: %s", c.Method, c.Path, c.Refused))
		}
	}
	seen := fmt.Sprintf("%s, %d refused", plural(len(all), "call"), len(bad))
	if len(bad) > 0 {
		seen += ": " + truncateString(list(bad), 300)
	}
	return r.tl.expect("every call to api.atlassian.com carried a system token issued for its installation", len(bad) == 0, "no refused call", seen)
}

// expectForgeTenant polls the internal API for the tenant of fi (named by
// id, its installationId or a Connect clientKey) until pred holds, and puts
// what it saw on the timeline.
func (r *run) expectForgeTenant(ctx context.Context, name, id, expected string, pred func(tenantView) bool) (tenantView, bool) {
	if !r.s.internalEnabled() {
		return tenantView{}, true
	}
	var last tenantView
	ok := r.expectTenant(ctx, name, id, expected, func(v tenantView) bool { last = v; return pred(v) }, describeForgeTenant)
	r.note("internal API /v1/tenants/" + id + ": " + describeForgeTenant(last))
	return last, ok
}

// describeForgeTenant renders what the internal API said of a Forge tenant.
func describeForgeTenant(v tenantView) string {
	t := v.Tenant
	s := fmt.Sprintf("platform %s, clientKey %q, installed=%t", t.Platform, t.ClientKey, t.Installed)
	if f := t.Forge; f != nil {
		s += fmt.Sprintf("; forge installation %s: appVersion %q, siteUrl %q, installed=%t, installedAt %s, upgradedAt %s, preUninstalledAt %s",
			f.InstallationID, f.AppVersion, f.SiteURL, f.Installed, stamp(f.InstalledAt), stamp(f.UpgradedAt), stamp(f.PreUninstalledAt))
	} else {
		s += "; no forge installation"
	}
	return s
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// sameStamp reports whether two optional times are the same instant.
func sameStamp(a, b *time.Time) bool {
	return a != nil && b != nil && a.Equal(*b)
}

// expectRetryHarmless delivers fs, checks through the internal API that the
// app recorded it (recorded), then sends Forge's retried copy (a new token)
// and checks it changed nothing: the time the app recorded for the delivery
// (stampOf) stays the first copy's. It returns whether both copies answered 204.
func (r *run) expectRetryHarmless(ctx context.Context, fi *forgeInstallation, fs forgeSend, name, expected string,
	recorded func(*forgeView) bool, stampOf func(*forgeView) *time.Time) bool {
	if !r.expectStatus(name+" answered", r.deliverForge(ctx, fi, fs), http.StatusNoContent) {
		return false
	}
	before, _ := r.expectForgeTenant(ctx, "the app records the "+name, fi.id, expected,
		func(v tenantView) bool { return v.Tenant.Forge != nil && recorded(v.Tenant.Forge) })
	fs.retry, fs.what = 1, fs.what+" (retried copy, a new token)"
	if !r.expectStatus(name+"'s retried copy answered", r.deliverForge(ctx, fi, fs), http.StatusNoContent) {
		return false
	}
	r.quiet()
	first := "-"
	if before.Tenant.Forge != nil {
		first = stamp(stampOf(before.Tenant.Forge))
	}
	r.expectForgeTenant(ctx, "the retried "+name+" changed nothing", fi.id, "the first copy's time "+first+", still installed",
		func(v tenantView) bool {
			f, b := v.Tenant.Forge, before.Tenant.Forge
			return f != nil && f.Installed && b != nil && sameStamp(stampOf(f), stampOf(b))
		})
	return true
}

func scForgeInstall(ctx context.Context, r *run) {
	fi := r.newForgeInstallation("")
	if !r.expectRetryHarmless(ctx, fi, forgeSend{path: appForgeLifecycle, module: moduleLifecycle,
		body: r.lifecycleBody(fi, forge.EventInstalled), what: forge.EventInstalled}, "Forge installed",
		"platform forge, installed, installedAt set",
		func(f *forgeView) bool { return f.Installed && f.InstalledAt != nil }, func(f *forgeView) *time.Time { return f.InstalledAt }) {
		return
	}
	r.expectServerInfo(ctx, fi)
	r.expectForgeTenant(ctx, "the app records the site URL serverInfo answered", fi.id, "platform forge, siteUrl "+fi.siteURL,
		func(v tenantView) bool {
			return v.Tenant.Platform == "forge" && v.Tenant.Forge != nil && v.Tenant.Forge.SiteURL == fi.siteURL && v.Tenant.BaseURL == fi.siteURL
		})

	other, err := forgetest.NewIssuer(r.s.ForgeAppID())
	if !r.tl.expect("generate the attacker's key", err == nil, "a key", errNote(err)) {
		return
	}
	otherApp, err := forge.NormalizeAppID(forgetest.NewUUID())
	if !r.tl.expect("name another app", err == nil, "an app id", errNote(err)) {
		return
	}
	forged := func(what string) forgeSend {
		return forgeSend{path: appForgeLifecycle, module: moduleLifecycle, body: r.lifecycleBody(fi, forge.EventInstalled), what: what}
	}
	fs := forged("signed with another key and kid, an unknown system token")
	fs.forged = other
	r.expectStatus("a FIT signed by another key (another kid) is answered 401", r.deliverForge(ctx, fi, fs), http.StatusUnauthorized)
	fs = forged("signed with another key under the simulator's kid " + r.s.forge.Kid())
	fs.forged, fs.edit = other, func(t *forgetest.Token) { t.Kid = r.s.forge.Kid() }
	r.expectStatus("a FIT signed by another key (the simulator's kid) is answered 401", r.deliverForge(ctx, fi, fs), http.StatusUnauthorized)
	fs = forged("signed with the simulator's key for another app, aud " + otherApp)
	fs.edit = func(t *forgetest.Token) { t.Audience, t.AppExtra = otherApp, map[string]any{"id": otherApp} }
	r.expectStatus("a FIT for another app is answered 401", r.deliverForge(ctx, fi, fs), http.StatusUnauthorized)
	r.quiet()
	r.expectForgeAPIClean()
}

func scForgeUpgrade(ctx context.Context, r *run) {
	fi := r.newForgeInstallation("")
	if !r.forgeInstalled(ctx, fi) {
		return
	}
	fi.version = "2.0.0"
	r.note("the vendor publishes a major version: Forge sends " + forge.EventUpgraded + " with appVersion " + fi.version)
	r.expectRetryHarmless(ctx, fi, forgeSend{path: appForgeLifecycle, module: moduleLifecycle,
		body: r.lifecycleBody(fi, forge.EventUpgraded), what: forge.EventUpgraded}, "Forge upgraded", "appVersion 2.0.0, upgradedAt set",
		func(f *forgeView) bool { return f.AppVersion == fi.version && f.UpgradedAt != nil },
		func(f *forgeView) *time.Time { return f.UpgradedAt })
	r.expectForgeAPIClean()
}

func scForgePreUninstall(ctx context.Context, r *run) {
	fi := r.newForgeInstallation("")
	if !r.forgeInstalled(ctx, fi) {
		return
	}
	r.note("an admin uninstalls the app: Forge calls the preUninstall module's endpoint")
	r.expectRetryHarmless(ctx, fi, forgeSend{path: appForgePreUninstall, module: modulePreUninstall, body: preUninstallBody(fi),
		what: "preUninstall"}, "pre-uninstall", "preUninstalledAt set, still installed (Forge may still call the app)",
		func(f *forgeView) bool { return f.PreUninstalledAt != nil && f.Installed },
		func(f *forgeView) *time.Time { return f.PreUninstalledAt })
	r.expectForgeAPIClean()
}

func scConnectOnForge(ctx context.Context, r *run) {
	t := r.newTenant("cof")
	t.forge = r.newForgeInstallation(r.s.baseURL(t.site.name))
	fi := t.forge
	r.note("the vendor registered the app on Forge: Connect installeds now carry installationId " + fi.id)
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.expectForgeTenant(ctx, "the app marks the tenant Connect-on-Forge", t.clientKey, "platform connect-on-forge, installationId "+fi.id,
		func(v tenantView) bool {
			return v.Tenant.Platform == "connect-on-forge" && v.Tenant.InstallationID == fi.id
		})
	fi.version = "2.0.0"
	if !r.deliverTwice(ctx, fi, forgeSend{path: appForgeLifecycle, module: moduleLifecycle,
		body: r.lifecycleBody(fi, forge.EventUpgraded), what: forge.EventUpgraded + " for the Connect-on-Forge installation"}, "the Forge upgraded") {
		return
	}
	r.expectServerInfo(ctx, fi)
	if !r.expectStatus("the Forge pre-uninstall answered", r.deliverForge(ctx, fi, forgeSend{path: appForgePreUninstall,
		module: modulePreUninstall, body: preUninstallBody(fi), what: "preUninstall for the Connect-on-Forge installation"}), http.StatusNoContent) {
		return
	}
	one := func(v tenantView) bool {
		f := v.Tenant.Forge
		return v.Tenant.ClientKey == t.clientKey && v.Tenant.Platform == "connect-on-forge" && v.Tenant.BaseURL == r.s.baseURL(t.site.name) &&
			f != nil && f.InstallationID == fi.id && f.ClientKey == t.clientKey && f.AppVersion == fi.version &&
			f.SiteURL == r.s.baseURL(t.site.name) && f.PreUninstalledAt != nil
	}
	want := fmt.Sprintf("clientKey %s, platform connect-on-forge, its forge installation %s at appVersion %s with siteUrl %s and preUninstalledAt",
		t.clientKey, fi.id, fi.version, r.s.baseURL(t.site.name))
	r.expectForgeTenant(ctx, "the installationId names the Connect tenant", fi.id, want, one)
	r.expectForgeTenant(ctx, "the clientKey names the same tenant, with the Forge events applied", t.clientKey, want, one)
	// The Connect side goes on as before: the tenant's secret still signs.
	gets := len(t.st.matching(isWebhookGet))
	r.expectStatus("enabled signed with the tenant's secret still answered", r.hs256(ctx, t, "enabled", t.secret(), ""), http.StatusNoContent)
	got := r.waitCalls(ctx, t.st, gets+1, isWebhookGet)
	r.tl.expect("the worker still calls the Connect site with the tenant's secret", len(got) > gets,
		"a verified GET "+pathWebhook+" on "+r.s.baseURL(t.site.name), plural(len(got)-gets, "new verified GET")+r.refusedNote(t.st))
	r.expectJWTsClean(t)
	r.expectForgeAPIClean()
}
