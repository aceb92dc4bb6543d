package simulator

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

func scInstall(ctx context.Context, r *run) {
	t := r.newTenant("install")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.expectJWTsClean(t)
	r.expectTenant(ctx, "the app records the tenant installed with an active license", t.clientKey, "installed, license active",
		func(v tenantView) bool { return v.Tenant.Installed && v.Tenant.License == "active" },
		func(v tenantView) string {
			return fmt.Sprintf("installed=%t, license %s", v.Tenant.Installed, v.Tenant.License)
		})
}

func scReinstall(ctx context.Context, r *run) {
	t := r.newTenant("reinstall")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.quiet()
	puts := len(t.st.matching(isWebhookPut))
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "same secret again")
	if !r.expectStatus("the re-sent installed answered", rep, http.StatusNoContent) {
		return
	}
	r.expectLicenseCalls(ctx, t, 2, "the worker read the license again")
	r.quiet()
	now := len(t.st.matching(isWebhookPut))
	r.tl.expect("the right webhook is not registered again", now == puts, plural(puts, "PUT")+" (no new one)", plural(now, "PUT"))
	r.expectStatus("enabled with the same secret answered", r.hs256(ctx, t, "enabled", t.secret(), ""), http.StatusNoContent)
	got := r.waitCalls(ctx, t.st, 2, isWebhookGet)
	r.tl.expect("the worker checked the webhook on enabled", len(got) >= 2, "a second GET "+pathWebhook, plural(len(got), "GET"))
	r.expectJWTsClean(t)
}

func scRotateSecret(ctx context.Context, r *run) {
	t := r.newTenant("rotate")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	old, fresh := t.secret(), newSecret()
	t.rotate(fresh)
	r.note("Atlassian rotates the shared secret of " + t.clientKey + "; the product now accepts only the new one")
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), fresh, "new sharedSecret")
	if !r.expectStatus("installed with the new secret answered", rep, http.StatusNoContent) {
		return
	}
	r.expectLicenseCalls(ctx, t, 2, "the worker signs with the new secret")
	r.expectRefused("enabled signed with the old secret is refused", r.hs256(ctx, t, "enabled", old, "old secret"))
	r.expectStatus("enabled signed with the new secret answered", r.hs256(ctx, t, "enabled", fresh, "new secret"), http.StatusNoContent)
	got := r.waitCalls(ctx, t.st, 2, isWebhookGet)
	r.tl.expect("the worker's webhook check after enabled verifies with the new secret", len(got) >= 2,
		"a second verified GET "+pathWebhook, plural(len(got), "verified GET")+r.refusedNote(t.st))
	r.expectJWTsClean(t)
}

func scRenameSite(ctx context.Context, r *run) {
	t := r.newTenant("rename")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.quiet()
	oldSite := t.site
	t.site = r.s.addSite(t.st)
	r.s.retire(oldSite)
	renamed := time.Now()
	r.note(fmt.Sprintf("the site is renamed: %s -> %s", r.s.baseURL(oldSite.name), r.s.baseURL(t.site.name)))
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "new baseUrl")
	if !r.expectStatus("installed with the new baseUrl answered", rep, http.StatusNoContent) {
		return
	}
	got := r.waitCalls(ctx, t.st, 1, onSite(t.site.name, isLicense(r.d.Key)))
	r.tl.expect("the worker reads the license at the new baseUrl", len(got) >= 1,
		"GET "+pathAddons+r.d.Key+" on "+r.s.baseURL(t.site.name), plural(len(got), "call")+r.refusedNote(t.st))
	r.expectStatus("enabled answered", r.hs256(ctx, t, "enabled", t.secret(), ""), http.StatusNoContent)
	got = r.waitCalls(ctx, t.st, 1, onSite(t.site.name, isWebhookGet))
	r.tl.expect("the worker checks the webhook at the new baseUrl", len(got) >= 1, "GET "+pathWebhook+" on the new baseUrl", plural(len(got), "call"))
	r.quiet()
	stale := t.st.matching(func(c Call) bool { return c.Site == oldSite.name && c.At.After(renamed) })
	r.tl.expect("no call to the old baseUrl after the rename", len(stale) == 0, "none", plural(len(stale), "call"))
	r.expectTenant(ctx, "the app records the new baseUrl", t.clientKey, r.s.baseURL(t.site.name),
		func(v tenantView) bool { return v.Tenant.BaseURL == r.s.baseURL(t.site.name) },
		func(v tenantView) string { return v.Tenant.BaseURL })
}

func scImportSite(ctx context.Context, r *run) {
	t := r.newTenant("import")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.quiet()
	// The site is imported (a backup restored into it): the same baseUrl,
	// a new clientKey with a new secret.
	r.s.mu.Lock()
	r.s.seq++
	newKey := fmt.Sprintf("sim-%s-imported-%d", r.s.runID, r.s.seq)
	r.s.mu.Unlock()
	oldKey, fresh := t.clientKey, newSecret()
	t.rotate(fresh)
	t.st.mu.Lock()
	t.st.clientKey = newKey
	t.st.mu.Unlock()
	t.clientKey = newKey
	licenseBefore := len(t.st.matching(isLicense(r.d.Key)))
	r.note(fmt.Sprintf("site import: %s now answers as clientKey %s (was %s)", r.s.baseURL(t.site.name), newKey, oldKey))
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), fresh, "new clientKey, same baseUrl")
	if !r.expectStatus("installed of the imported site answered", rep, http.StatusNoContent) {
		return
	}
	r.expectLicenseCalls(ctx, t, licenseBefore+1, "the worker initializes the new clientKey with its secret")
	r.expectWebhookRegistered(ctx, t)
	r.expectJWTsClean(t)
	r.expectTenant(ctx, "the app links the new clientKey to the old one", newKey, "a change naming "+oldKey,
		func(v tenantView) bool {
			for _, h := range v.History {
				if strings.Contains(strings.Join(h.Changes, " "), oldKey) {
					return true
				}
			}
			return false
		},
		func(v tenantView) string { return fmt.Sprintf("history %s", jsonString(v.History)) })
}

func scUpgrade(ctx context.Context, r *run) {
	t := r.newTenant("upgrade")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	d, err := r.s.readDescriptor(ctx)
	r.s.event(actorAtlassian, actorApp, "GET "+descriptorPath+"  (the vendor published a new version)", statusOf(err), errNote(err))
	if !r.tl.expect("the descriptor is served", err == nil, "a descriptor with key, baseUrl, lifecycle and migration paths", errNote(err)) {
		return
	}
	r.tl.expect("the descriptor keeps its key and signed installs", d.Key == r.d.Key && d.APIMigrations.SignedInstall,
		fmt.Sprintf("key %q, apiMigrations.signed-install true", r.d.Key), fmt.Sprintf("key %q, signed-install %t", d.Key, d.APIMigrations.SignedInstall))
	body := installBody("installed", r.d.Key, t.clientKey, r.s.baseURL(t.site.name), t.secret())
	body["pluginsVersion"] = "1002.0.0-SNAPSHOT"
	rep := r.send(ctx, r.d.Lifecycle.Installed, body, signing{alg: "RS256", issuer: t.clientKey},
		"clientKey="+t.clientKey+", RS256 signed install, the upgrade's re-install (pluginsVersion 1002.0.0)")
	if !r.expectStatus("the upgrade's installed answered", rep, http.StatusNoContent) {
		return
	}
	r.expectLicenseCalls(ctx, t, 2, "the worker reads the license after the upgrade")
	r.expectJWTsClean(t)
	r.expectTenant(ctx, "the app records the new pluginsVersion", t.clientKey, "a change of pluginsVersion",
		func(v tenantView) bool {
			for _, h := range v.History {
				if strings.Contains(strings.Join(h.Changes, " "), "1002.0.0") {
					return true
				}
			}
			return false
		},
		func(v tenantView) string { return "history " + truncateString(jsonString(v.History), 300) })
}

func statusOf(err error) int {
	if err != nil {
		return 0
	}
	return http.StatusOK
}

func errNote(err error) string {
	if err != nil {
		return err.Error()
	}
	return ""
}

func scUninstallRace(ctx context.Context, r *run) {
	for _, order := range [][2]string{{"disabled", "uninstalled"}, {"uninstalled", "disabled"}} {
		t := r.newTenant("race")
		if _, ok := r.initialize(ctx, t); !ok {
			return
		}
		r.quiet()
		r.note(fmt.Sprintf("%s then %s, 2 ms apart, for %s", order[0], order[1], t.clientKey))
		replies := make([]reply, 2)
		var wg sync.WaitGroup
		for i, ev := range order {
			wg.Go(func() {
				if ev == "disabled" {
					replies[i] = r.hs256(ctx, t, "disabled", t.secret(), "")
				} else {
					replies[i] = r.uninstalled(ctx, t)
				}
			})
			if i == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		wg.Wait()
		for i, ev := range order {
			r.expectStatus(fmt.Sprintf("%s (%s first) answered", ev, order[0]), replies[i], http.StatusNoContent)
		}
		r.expectTenant(ctx, fmt.Sprintf("the tenant ends uninstalled and disabled (%s first)", order[0]), t.clientKey, "installed=false, enabled=false",
			func(v tenantView) bool { return !v.Tenant.Installed && !v.Tenant.Enabled },
			func(v tenantView) string {
				return fmt.Sprintf("installed=%t, enabled=%t", v.Tenant.Installed, v.Tenant.Enabled)
			})
		licenses := len(t.st.matching(isLicense(r.d.Key)))
		r.quiet()
		after := len(t.st.matching(isLicense(r.d.Key)))
		r.tl.expect(fmt.Sprintf("the worker does no work for the uninstalled tenant (%s first)", order[0]), after == licenses, "no new call", plural(after-licenses, "new call"))
		if order[0] == "uninstalled" {
			// An uninstall is not final: the customer installs again.
			rep := r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "the customer installs again")
			if r.expectStatus("the re-install after the race answered", rep, http.StatusNoContent) {
				r.expectLicenseCalls(ctx, t, licenses+1, "the worker initializes the re-installed tenant")
			}
		}
		r.expectJWTsClean(t)
	}
}

func scLicenseLapse(ctx context.Context, r *run) {
	if !r.s.internalEnabled() {
		r.tl.expect("the app's recorded license can be read", false, "--internal and INTERNAL_TOKEN (the app's /v1 API)", "not given")
		return
	}
	t := r.newTenant("lapse")
	if _, ok := r.initialize(ctx, t); !ok {
		return
	}
	r.expectTenant(ctx, "the app records an active license", t.clientKey, "license active",
		func(v tenantView) bool { return v.Tenant.License == "active" }, func(v tenantView) string { return "license " + v.Tenant.License })
	t.st.mu.Lock()
	t.st.licenseActive = false
	t.st.mu.Unlock()
	r.note("the customer's subscription ends: the License API of " + t.clientKey + " now answers active=false")
	// The app reads licenses at initialization and in its daily sweep; the
	// simulator cannot run the sweep, so it prompts a read the way Atlassian
	// does: installed is re-sent.
	rep := r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "re-sent, prompting a license read")
	if !r.expectStatus("the re-sent installed answered", rep, http.StatusNoContent) {
		return
	}
	r.expectLicenseCalls(ctx, t, 2, "the worker reads the license again")
	r.expectTenant(ctx, "the app records the license inactive", t.clientKey, "license inactive",
		func(v tenantView) bool { return v.Tenant.License == "inactive" }, func(v tenantView) string { return "license " + v.Tenant.License })
	r.expectJWTsClean(t)
}

func scForgedInstall(ctx context.Context, r *run) {
	t := r.newTenant("forged")
	legit, ok := r.initialize(ctx, t)
	if !ok {
		return
	}
	r.quiet()
	evil, evilState := r.s.newSite("attacker", newSecret())
	evilBase := r.s.baseURL(evil.name)
	evilSecret := evilState.secret
	body := installBody("installed", r.d.Key, t.clientKey, evilBase, evilSecret)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		r.tl.expect("generate the attacker's key", false, "a key", err.Error())
		return
	}
	path := r.d.Lifecycle.Installed
	r.expectRefused("an unsigned installed is refused",
		r.send(ctx, path, body, signing{}, "clientKey="+t.clientKey+", no Authorization, attacker's secret and baseUrl"))
	r.expectRefused("an installed signed with another key (same kid) is refused",
		r.send(ctx, path, body, signing{alg: "RS256", issuer: t.clientKey, key: otherKey},
			"clientKey="+t.clientKey+", RS256 with the attacker's key, kid "+r.s.kid))
	r.expectRefused("an installed signed with another key and kid is refused",
		r.send(ctx, path, body, signing{alg: "RS256", issuer: t.clientKey, key: otherKey, kid: r.s.kid + "-attacker"},
			"clientKey="+t.clientKey+", RS256 with the attacker's key and kid"))
	r.expectRefused("an installed HS256-signed with the attacker's secret is refused",
		r.send(ctx, path, body, signing{alg: "HS256", issuer: t.clientKey, secret: evilSecret},
			"clientKey="+t.clientKey+", HS256 with the secret in the body"))
	r.expectRefused("the real install's token replayed with another body is refused",
		r.send(ctx, path, body, signing{token: legit.token}, "clientKey="+t.clientKey+", the legitimate token, attacker's body"))
	// Unharmed: the real secret still works, the forged one does not, and the
	// worker still calls the real site.
	gets := len(t.st.matching(isWebhookGet))
	r.expectStatus("enabled signed with the real secret still answered", r.hs256(ctx, t, "enabled", t.secret(), "the real secret"), http.StatusNoContent)
	r.expectRefused("enabled signed with the forged secret is refused", r.hs256(ctx, t, "enabled", evilSecret, "the attacker's secret"))
	got := r.waitCalls(ctx, t.st, gets+1, isWebhookGet)
	r.tl.expect("the worker still calls the real site with the real secret", len(got) > gets,
		"a verified GET "+pathWebhook+" on "+r.s.baseURL(t.site.name), plural(len(got)-gets, "new verified GET")+r.refusedNote(t.st))
	r.quiet()
	stolen := evilState.matching(nil)
	r.tl.expect("nothing reaches the attacker's baseUrl", len(stolen) == 0, "no call", plural(len(stolen), "call"))
	r.expectJWTsClean(t)
	r.expectTenant(ctx, "the app keeps the real baseUrl", t.clientKey, r.s.baseURL(t.site.name),
		func(v tenantView) bool { return v.Tenant.BaseURL == r.s.baseURL(t.site.name) && v.Tenant.Installed },
		func(v tenantView) string {
			return fmt.Sprintf("%s (installed=%t)", v.Tenant.BaseURL, v.Tenant.Installed)
		})
}

func scStorm(ctx context.Context, r *run) {
	n := r.opts.Tenants
	if n <= 0 {
		n = 20
	}
	const concurrency = 8
	tenants := make([]*tenant, n)
	for i := range tenants {
		tenants[i] = r.newTenant("storm")
	}
	phase := func(name string, each func(t *tenant) reply) (int, time.Duration) {
		start := time.Now()
		sem := make(chan struct{}, concurrency)
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for _, t := range tenants {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if rep := each(t); rep.err == nil && rep.status == http.StatusNoContent {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		d := time.Since(start)
		r.note(fmt.Sprintf("%s: %d of %d answered 204 in %s (concurrency %d)", name, ok, n, d.Round(time.Millisecond), concurrency))
		return ok, d
	}
	ok, _ := phase("installs", func(t *tenant) reply { return r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "") })
	r.tl.expect("every install answered 204", ok == n, fmt.Sprintf("%d", n), fmt.Sprintf("%d", ok))
	start := time.Now()
	waitAll := func(pred func(t *tenant) bool) int {
		deadline := time.Now().Add(r.s.cfg.Timeout + time.Duration(n)*50*time.Millisecond)
		for {
			done := 0
			for _, t := range tenants {
				if pred(t) {
					done++
				}
			}
			if done == n || time.Now().After(deadline) || ctx.Err() != nil {
				return done
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	want := r.d.webhookURL()
	done := waitAll(func(t *tenant) bool {
		t.st.mu.Lock()
		defer t.st.mu.Unlock()
		return len(t.st.endpoints) == 1 && t.st.endpoints[0] == want
	})
	r.tl.expect("the worker initialized every tenant (license read, webhook registered)", done == n,
		fmt.Sprintf("%d tenants", n), fmt.Sprintf("%d tenants in %s", done, time.Since(start).Round(time.Millisecond)))
	licenses := waitAll(func(t *tenant) bool { return len(t.st.matching(isLicense(r.d.Key))) >= 1 })
	r.tl.expect("every tenant's license was read", licenses == n, fmt.Sprintf("%d", n), fmt.Sprintf("%d", licenses))
	r.quiet()
	for _, t := range tenants {
		t.rotate(newSecret())
	}
	ok, _ = phase("re-installs with rotated secrets", func(t *tenant) reply {
		return r.installed(ctx, t, r.s.baseURL(t.site.name), t.secret(), "rotated secret")
	})
	r.tl.expect("every re-install answered 204", ok == n, fmt.Sprintf("%d", n), fmt.Sprintf("%d", ok))
	start = time.Now()
	done = waitAll(func(t *tenant) bool { return len(t.st.matching(isLicense(r.d.Key))) >= 2 })
	r.tl.expect("the worker signs every tenant's next call with its rotated secret", done == n,
		fmt.Sprintf("%d tenants", n), fmt.Sprintf("%d tenants in %s", done, time.Since(start).Round(time.Millisecond)))
	r.expectJWTsClean(tenants...)
}
