package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Options are the scenario flags of connectctl simulate.
type Options struct {
	// Uploads is how many uploads a migration has (--uploads); 3 when zero.
	Uploads int
	// OutOfOrder sends uploads before listener-triggered and the final one
	// before the others (--out-of-order).
	OutOfOrder bool
	// Duplicates sends every migration event twice, listener-triggered three
	// times (--duplicates).
	Duplicates bool
	// NoMessageID leaves messageId out of every migration event (--no-message-id).
	NoMessageID bool
	// Cancel requests the transfer's cancellation after its first upload (--cancel).
	Cancel bool
	// ListenerErrored reports the vendor's server-side listener failed (--listener-errored).
	ListenerErrored bool
	// Big adds one generated upload of this many bytes, streamed (--big SIZE).
	Big int64
	// Tenants is how many tenants storm installs (--tenants); 20 when zero.
	Tenants int
}

// scenario is one playable scenario.
type scenario struct {
	name, about string
	run         func(ctx context.Context, r *run)
}

// run is the state of one scenario being played.
type run struct {
	s    *Simulator
	d    descriptor
	tl   *timeline
	opts Options
}

// Scenarios lists the scenario names in the order tour and the docs use.
func Scenarios() []string {
	names := make([]string, 0, len(catalogue()))
	for _, sc := range catalogue() {
		names = append(names, sc.name)
	}
	return names
}

// Describe returns the one-line description of a scenario, "" for an unknown name.
func Describe(name string) string {
	for _, sc := range catalogue() {
		if sc.name == name {
			return sc.about
		}
	}
	return ""
}

func catalogue() []scenario {
	return []scenario{
		{"install", "a signed installed; the worker checks the license and registers the migration webhook", scInstall},
		{"reinstall", "installed again with the same secret; the license is read again, the right webhook is left alone", scReinstall},
		{"rotate-secret", "installed with a new shared secret; the old one is refused, the worker signs with the new one", scRotateSecret},
		{"rename-site", "installed with a new baseUrl for the same clientKey; the worker calls only the new baseUrl", scRenameSite},
		{"import-site", "a new clientKey installs with an existing site's baseUrl (a site import)", scImportSite},
		{"upgrade", "the app's descriptor is read again and installed is re-sent for the new version", scUpgrade},
		{"uninstall-race", "disabled and uninstalled milliseconds apart, in both orders; the tenant ends uninstalled", scUninstallRace},
		{"license-lapse", "the License API turns inactive; the app records it at its next license read", scLicenseLapse},
		{"forged-install", "unsigned, wrong-key and replayed installs are refused and the tenant is unharmed", scForgedInstall},
		{"migration", "an App Migration Platform transfer: events, uploads downloaded once, the transfer settled", scMigration},
		{"storm", "many installs at once, then re-installs with rotated secrets", scStorm},
		{"forge-install", "Forge installs (FIT-signed, retried): the worker asks serverInfo with the system token; forged FITs get 401", scForgeInstall},
		{"forge-upgrade", "a Forge installation is upgraded to a major version; the retried copy changes nothing", scForgeUpgrade},
		{"forge-pre-uninstall", "Forge announces the uninstall (preUninstall); the retried copy changes nothing", scForgePreUninstall},
		{"connect-on-forge", "a Connect installed carrying installationId, then Forge events for it: one tenant", scConnectOnForge},
		{"forge-migration", "a Forge App Migration Platform transfer: FIT-signed events, uploads downloaded once, each message given one status", scForgeMigration},
	}
}

// tourSteps is the tour: each capability once.
var tourSteps = []struct {
	name string
	opts func(Options) Options
}{
	{"rotate-secret", nil},
	{"rename-site", nil},
	{"forged-install", nil},
	{"uninstall-race", nil},
	{"license-lapse", nil},
	{"migration", func(o Options) Options { o.Uploads, o.OutOfOrder, o.Duplicates = 3, true, true; return o }},
	{"storm", func(o Options) Options { o.Tenants = 5; return o }},
	{"forge-install", nil},
	{"connect-on-forge", nil},
	{"forge-migration", func(o Options) Options { o.Uploads, o.OutOfOrder, o.Duplicates = 3, true, true; return o }},
}

// Run plays the named scenarios ("tour" expands to the tour) against the app
// and prints to p. An unknown name is an error before anything runs.
func (s *Simulator) Run(ctx context.Context, names []string, opts Options, p *Printer) (Summary, error) {
	type step struct {
		sc   scenario
		opts Options
	}
	var steps []step
	find := func(name string) (scenario, bool) {
		for _, sc := range catalogue() {
			if sc.name == name {
				return sc, true
			}
		}
		return scenario{}, false
	}
	if len(names) == 0 {
		names = []string{"tour"}
	}
	for _, n := range names {
		if n == "tour" {
			for _, ts := range tourSteps {
				sc, _ := find(ts.name)
				o := opts
				if ts.opts != nil {
					o = ts.opts(opts)
				}
				steps = append(steps, step{sc, o})
			}
			continue
		}
		sc, ok := find(n)
		if !ok {
			return Summary{}, fmt.Errorf("%w: unknown scenario %q (want tour or one of %s)", ErrConfig, n, strings.Join(Scenarios(), ", "))
		}
		steps = append(steps, step{sc, opts})
	}
	d, err := s.readDescriptor(ctx)
	if err != nil {
		return Summary{}, fmt.Errorf("simulator: the app at %s: %w", s.cfg.App, err)
	}
	p.Message("simulating Atlassian at %s for app %q (baseUrl %s, requests to %s)", s.origin, d.Key, d.BaseURL, s.cfg.App)
	if !s.internalEnabled() {
		p.Message("note: no INTERNAL_TOKEN/--internal: checks of the app's own records (license-lapse, Forge installations) cannot run")
	}
	var sum Summary
	for _, st := range steps {
		if ctx.Err() != nil {
			break
		}
		tl := &timeline{name: st.sc.name, start: time.Now(), p: p}
		p.start(st.sc.name, st.sc.about)
		s.mu.Lock()
		s.tl = tl
		s.mu.Unlock()
		st.sc.run(ctx, &run{s: s, d: d, tl: tl, opts: st.opts})
		s.mu.Lock()
		s.tl = nil
		s.mu.Unlock()
		res := tl.result()
		p.result(res)
		sum.Results = append(sum.Results, res)
		if res.Pass {
			sum.Passed++
		} else {
			sum.Failed++
		}
	}
	return sum, nil
}

// tenant is one simulated installation.
type tenant struct {
	clientKey string
	site      *site
	st        *tenantState
	// forge is the Forge installation of a Connect-on-Forge tenant; its
	// installeds carry its installationId. Nil for a Connect app.
	forge *forgeInstallation
}

// newTenant creates a tenant with a fresh site and secret.
func (r *run) newTenant(label string) *tenant {
	r.s.mu.Lock()
	r.s.seq++
	ck := fmt.Sprintf("sim-%s-%s-%d", r.s.runID, label, r.s.seq)
	r.s.mu.Unlock()
	si, st := r.s.newSite(ck, newSecret())
	return &tenant{clientKey: ck, site: si, st: st}
}

// newSecret is a shared secret as long as Atlassian's.
func newSecret() string { return randomHex(32) }

func (t *tenant) secret() string {
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	return t.st.secret
}

// rotate makes secret the tenant's current one at the product.
func (t *tenant) rotate(secret string) {
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	t.st.oldSecrets = append(t.st.oldSecrets, t.st.secret)
	t.st.secret = secret
}

// calls returns the calls matching pred.
func (st *tenantState) matching(pred func(Call) bool) []Call {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []Call
	for _, c := range st.calls {
		if pred == nil || pred(c) {
			out = append(out, c)
		}
	}
	return out
}

// Predicates on calls.
func isLicense(appKey string) func(Call) bool {
	return func(c Call) bool {
		return c.Method == http.MethodGet && c.Path == pathAddons+appKey && c.JWT == ""
	}
}

func isWebhookGet(c Call) bool {
	return c.Method == http.MethodGet && c.Path == pathWebhook && c.JWT == ""
}

func isWebhookPut(c Call) bool {
	return c.Method == http.MethodPut && c.Path == pathWebhook && c.JWT == ""
}

func onSite(name string, pred func(Call) bool) func(Call) bool {
	return func(c Call) bool { return c.Site == name && pred(c) }
}

// waitCalls waits until at least n calls match pred, up to the timeout.
func (r *run) waitCalls(ctx context.Context, st *tenantState, n int, pred func(Call) bool) []Call {
	return r.waitCallsFor(ctx, st, n, pred, r.s.cfg.Timeout)
}

func (r *run) waitCallsFor(ctx context.Context, st *tenantState, n int, pred func(Call) bool, within time.Duration) []Call {
	deadline := time.Now().Add(within)
	for {
		got := st.matching(pred)
		if len(got) >= n || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet gives the worker a moment to make calls it should not make.
func (r *run) quiet() { time.Sleep(400 * time.Millisecond) }

// send posts a lifecycle or migration request and puts it on the timeline.
func (r *run) send(ctx context.Context, path string, body any, sg signing, what string) reply {
	rep := r.s.send(ctx, r.d, path, body, sg)
	note := ""
	if rep.err != nil {
		note = "no answer: " + rep.err.Error()
	} else if rep.status >= 300 && rep.body != "" {
		note = "answer: " + truncateString(rep.body, 160)
	}
	r.s.event(actorAtlassian, actorApp, "POST "+path+"  "+what, rep.status, note)
	return rep
}

// installed sends a signed installed for t with baseUrl base and secret.
func (r *run) installed(ctx context.Context, t *tenant, base, secret, what string) reply {
	body := installBody("installed", r.d.Key, t.clientKey, base, secret)
	if fi := t.forge; fi != nil {
		// Connect-on-Forge: the installed names the Forge installation.
		body["installationId"], body["cloudId"] = fi.id, fi.cloudID
		what = "installationId " + fi.id + prefixed(what)
	}
	return r.send(ctx, r.d.Lifecycle.Installed, body, signing{alg: "RS256", issuer: t.clientKey},
		fmt.Sprintf("clientKey=%s, RS256 signed install%s", t.clientKey, prefixed(what)))
}

// hs256 sends an HS256-signed lifecycle callback of event for t.
func (r *run) hs256(ctx context.Context, t *tenant, event, secret, what string) reply {
	path := r.d.Lifecycle.Enabled
	if event == "disabled" {
		path = r.d.Lifecycle.Disabled
	}
	body := installBody(event, r.d.Key, t.clientKey, r.s.baseURL(t.site.name), "")
	return r.send(ctx, path, body, signing{alg: "HS256", issuer: t.clientKey, secret: secret},
		fmt.Sprintf("clientKey=%s, HS256%s", t.clientKey, prefixed(what)))
}

// uninstalled sends a signed uninstalled for t.
func (r *run) uninstalled(ctx context.Context, t *tenant) reply {
	body := installBody("uninstalled", r.d.Key, t.clientKey, r.s.baseURL(t.site.name), "")
	return r.send(ctx, r.d.Lifecycle.Uninstalled, body, signing{alg: "RS256", issuer: t.clientKey},
		fmt.Sprintf("clientKey=%s, RS256 signed", t.clientKey))
}

func prefixed(s string) string {
	if s == "" {
		return ""
	}
	return ", " + s
}

// expectStatus checks the app's answer.
func (r *run) expectStatus(name string, rep reply, want int) bool {
	seen := rep.text()
	if rep.err == nil && rep.status != want && rep.body != "" {
		seen += " " + truncateString(rep.body, 160)
	}
	return r.tl.expect(name, rep.err == nil && rep.status == want, fmt.Sprintf("%d", want), seen)
}

// expectRefused checks the app refused a request (401 or 400/403).
func (r *run) expectRefused(name string, rep reply) bool {
	ok := rep.err == nil && rep.status >= 400 && rep.status < 500
	seen := rep.text()
	if ok || rep.err != nil {
		return r.tl.expect(name, ok, "a 4xx refusal", seen)
	}
	if rep.status < 300 {
		seen += " (accepted)"
	}
	return r.tl.expect(name, false, "a 4xx refusal", seen)
}

// initialize installs t at its site and checks the worker's initialization:
// the license read and the migration webhook registered at the product.
func (r *run) initialize(ctx context.Context, t *tenant) (reply, bool) {
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "")
	if !r.expectStatus("installed answered", rep, http.StatusNoContent) {
		return rep, false
	}
	ok := r.expectLicenseCalls(ctx, t, 1, "the worker read the license")
	return rep, r.expectWebhookRegistered(ctx, t) && ok
}

// expectLicenseCalls waits for n verified license reads of t's site(s).
func (r *run) expectLicenseCalls(ctx context.Context, t *tenant, n int, name string) bool {
	got := r.waitCalls(ctx, t.st, n, isLicense(r.d.Key))
	return r.tl.expect(name, len(got) >= n,
		fmt.Sprintf("%s of GET %s%s with a verified JWT within %s", plural(n, "call"), pathAddons, r.d.Key, r.s.cfg.Timeout),
		fmt.Sprintf("%s%s", plural(len(got), "verified call"), r.refusedNote(t.st)))
}

// expectWebhookRegistered waits until the site's registered migration webhook
// is exactly the app's.
func (r *run) expectWebhookRegistered(ctx context.Context, t *tenant) bool {
	want := r.d.webhookURL()
	deadline := time.Now().Add(r.s.cfg.Timeout)
	var eps []string
	for {
		t.st.mu.Lock()
		eps = append([]string(nil), t.st.endpoints...)
		t.st.mu.Unlock()
		if slices.Equal(eps, []string{want}) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	puts := t.st.matching(isWebhookPut)
	return r.tl.expect("the worker registered the migration webhook", slices.Equal(eps, []string{want}),
		fmt.Sprintf("PUT %s with endpoints [%s] within %s", pathWebhook, want, r.s.cfg.Timeout),
		fmt.Sprintf("%s, registered endpoints [%s]%s", plural(len(puts), "verified PUT"), strings.Join(eps, ", "), r.refusedNote(t.st)))
}

// refusedNote names the worker's calls whose JWT did not verify.
func (r *run) refusedNote(st *tenantState) string {
	bad := st.matching(func(c Call) bool { return c.JWT != "" })
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s refused: %s %s: %s)", plural(len(bad), "call"), bad[0].Method, bad[0].Path, bad[0].JWT)
}

// expectJWTsClean checks every call of the worker to the tenants' sites verified.
func (r *run) expectJWTsClean(tenants ...*tenant) bool {
	var bad []string
	total := 0
	for _, t := range tenants {
		total += len(t.st.matching(nil))
		for _, c := range t.st.matching(func(c Call) bool { return c.JWT != "" }) {
			bad = append(bad, fmt.Sprintf("%s %s on %s: %s", c.Method, c.Path, c.Site, c.JWT))
		}
	}
	seen := fmt.Sprintf("%s, %d refused", plural(total, "call"), len(bad))
	if len(bad) > 0 {
		seen += ": " + truncateString(list(bad), 300)
	}
	return r.tl.expect("every worker call verified (iss, qsh, exp, current secret)", len(bad) == 0, "no refused token", seen)
}

// expectTenant polls the internal API until pred holds, up to the timeout.
func (r *run) expectTenant(ctx context.Context, name, clientKey, expected string, pred func(tenantView) bool, seen func(tenantView) string) bool {
	if !r.s.internalEnabled() {
		return true
	}
	deadline := time.Now().Add(r.s.cfg.Timeout)
	var v tenantView
	var err error
	for {
		v, err = r.s.readTenant(ctx, clientKey)
		if (err == nil && pred(v)) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return r.tl.expect(name+" (internal API)", false, expected, err.Error())
	}
	return r.tl.expect(name+" (internal API)", pred(v), expected, seen(v))
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// note puts a simulator action on the timeline.
func (r *run) note(what string) { r.s.event(actorSim, actorSim, what, 0, "") }

// jsonString renders v compactly.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
