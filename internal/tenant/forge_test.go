package tenant

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
	"github.com/connectrelay/connectrelay/product"
)

const testForgeApp = "ari:cloud:ecosystem::app/8db33809-1f32-48bb-8c52-5877dab48107"

// forgeClaimsFor are verified claims of installation id on cloud, as the
// receiver hands them to RecordForge.
func forgeClaimsFor(id, cloud, version string) *forge.Claims {
	api := "https://api.atlassian.com/ex/jira/" + cloud
	return &forge.Claims{ID: forgetest.NewUUID(), App: forge.App{
		ID: testForgeApp, InstallationID: id, APIBaseURL: api, AppVersion: version,
		Installation: forge.Installation{ID: id, Contexts: []forge.InstallationContext{
			{Name: "ari:cloud:jira::site/" + cloud, APIBaseURL: api, CloudID: cloud}}},
		Environment: forge.Environment{Type: "PRODUCTION", ID: forge.EnvironmentARIPrefix + "8db33809-1f32-48bb-8c52-5877dab48107/env"},
	}}
}

// systemToken is an opaque JWT-shaped token expiring at exp, unique per call.
func systemToken(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." +
		enc(fmt.Appendf(nil, `{"exp":%d,"jti":%q}`, exp.Unix(), forgetest.NewUUID())) + ".c2lnbmF0dXJl"
}

func (b *testBundle) recordForge(t *testing.T, ev ForgeEvent) ForgeResult {
	t.Helper()
	if ev.Type != "" && ev.DedupeKey == "" {
		ev.DedupeKey = forge.LifecycleDedupeKey(ev.Claims, ev.Type)
	}
	res, err := b.store.RecordForge(testCtx(t), ev)
	if err != nil {
		t.Fatalf("RecordForge(%s): %v", ev.Type, err)
	}
	return res
}

func (b *testBundle) feedTypes(t *testing.T, subject string) []string {
	t.Helper()
	rows, err := b.pool.Query(testCtx(t), `SELECT type FROM event_outbox WHERE client_key = $1 ORDER BY id`, subject)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestRecordForge_InstalledCreatesAForgeTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	active := true
	c := forgeClaimsFor(id, cloud, "2.1.0")
	c.App.License = &forge.License{Active: &active}
	res := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: c, At: ts(0), IssuedAt: ts(0)})
	if !res.Created || !res.Applied || res.Duplicate || res.EventID == 0 {
		t.Fatalf("result = %+v, want created, applied, an event id", res)
	}
	tn := b.get(t, id)
	if tn.Platform != connectrelay.PlatformForge || tn.ID() != id || !tn.Installed || tn.CloudID != cloud || tn.ProductType != "jira" {
		t.Errorf("tenant = %+v", tn)
	}
	if tn.LicenseState != connectrelay.LicenseActive {
		t.Errorf("license = %s, want active (from app.license.active)", tn.LicenseState)
	}
	if tn.Forge == nil || tn.Forge.AppVersion != "2.1.0" || tn.Forge.APIBaseURL != c.App.APIBaseURL || tn.Forge.AppID != testForgeApp {
		t.Errorf("forge installation = %+v", tn.Forge)
	}
	if got := b.feedTypes(t, id); len(got) != 1 || got[0] != string(connectrelay.EventForgeInstalled) {
		t.Errorf("feed = %v, want one forge.installed", got)
	}
}

func TestRecordForge_RetriedDeliveryIsRecordedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := forgetest.NewInstallationID()
	cloud := forgetest.NewCloudID()
	first := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(0), IssuedAt: ts(0)})
	// Forge's retry: a new token (new jti, later iat), the same event.
	again := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(60), IssuedAt: ts(60)})
	if !again.Duplicate || again.EventID != first.EventID {
		t.Fatalf("retry = %+v, want a duplicate of event %d", again, first.EventID)
	}
	if n := b.count(t, `SELECT count(*) FROM forge_events WHERE installation_id = $1`, id); n != 1 {
		t.Errorf("forge_events rows = %d, want 1", n)
	}
	if got := b.feedTypes(t, id); len(got) != 1 {
		t.Errorf("feed = %v, want one event", got)
	}
}

func TestRecordForge_UpgradeAndPreUninstall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(0), IssuedAt: ts(0)})
	up := b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, Claims: forgeClaimsFor(id, cloud, "2.0.0"), At: ts(10), IssuedAt: ts(10)})
	if !up.Applied || up.Duplicate || len(up.Changes) != 1 || up.Changes[0] != `app version "1.0.0" -> "2.0.0"` {
		t.Errorf("upgrade = %+v", up)
	}
	pre := b.recordForge(t, ForgeEvent{Type: ForgePreUninstall, Claims: forgeClaimsFor(id, cloud, "2.0.0"), At: ts(20), IssuedAt: ts(20)})
	if !pre.Applied || pre.Installation.PreUninstalledAt == nil || !pre.Installation.Installed {
		t.Errorf("pre-uninstall = %+v; want recorded, still installed (Forge may still call)", pre)
	}
	want := []string{"forge.installed", "forge.upgraded", "forge.pre_uninstall"}
	if got := b.feedTypes(t, id); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("feed = %v, want %v", got, want)
	}
	// A late delivery with an older token (an installed issued before the
	// pre-uninstall, with a dedupe key of its own) counts, but its older
	// claims do not replace the stored ones.
	late := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "0.9.0"), At: ts(30), IssuedAt: ts(5)})
	if !late.Applied || late.Installation.AppVersion != "2.0.0" || !strings.Contains(strings.Join(late.Changes, ";"), "claims not updated") {
		t.Errorf("late installed = %+v, want applied with the version still 2.0.0", late)
	}
	un := b.recordForge(t, ForgeEvent{Type: forge.EventUninstalled, Claims: forgeClaimsFor(id, cloud, "2.0.0"), At: ts(40), IssuedAt: ts(40)})
	if un.Installation.Installed || b.get(t, id).Installed {
		t.Errorf("after uninstalled: %+v, want not installed", un.Installation)
	}
	// An installationId is never reused: a retried installed after the
	// uninstall (a new token, so a newer iat) does not install it again.
	again := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, DedupeKey: "retry-after-uninstall", Claims: forgeClaimsFor(id, cloud, "2.0.0"), At: ts(50), IssuedAt: ts(50)})
	if again.Applied || again.Installation.Installed {
		t.Errorf("installed after uninstalled = %+v, want not applied", again)
	}
}

// A newer delivery (a migration event) can create the installation before
// the installed, whose token is older, is recorded: the installed still
// installs it.
func TestRecordForge_InstalledBehindANewerDeliveryStillInstalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(1), IssuedAt: ts(10)})
	res := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(2), IssuedAt: ts(5)})
	if !res.Applied || !res.Installation.Installed || res.Installation.InstalledAt == nil {
		t.Fatalf("installed = %+v, want applied and installed", res)
	}
	if got := b.feedTypes(t, id); len(got) != 1 || got[0] != string(connectrelay.EventForgeInstalled) {
		t.Errorf("feed = %v, want forge.installed", got)
	}
}

func TestRecordForge_ReinstallOnKnownCloudIDIsLinkedNotMerged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cloud := forgetest.NewCloudID()
	old, fresh := forgetest.NewInstallationID(), forgetest.NewInstallationID()
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(old, cloud, "1.0.0"), At: ts(0), IssuedAt: ts(0)})
	res := b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(fresh, cloud, "1.0.0"), At: ts(100), IssuedAt: ts(100)})
	if !res.Created || res.Installation.PreviousInstallationID != old {
		t.Fatalf("reinstall = %+v, want a new installation linked to %s", res.Installation, old)
	}
	if !strings.Contains(strings.Join(res.Changes, ";"), "previous installation "+old) {
		t.Errorf("changes = %v", res.Changes)
	}
	if b.get(t, old).ID() != old || !b.get(t, old).Installed {
		t.Errorf("earlier installation changed: %+v", b.get(t, old))
	}
	if n := b.count(t, `SELECT count(*) FROM forge_installations WHERE cloud_id = $1`, cloud); n != 2 {
		t.Errorf("installations on the cloudId = %d, want 2", n)
	}
}

func TestRecordForge_ConnectOnForgeStaysOneTenant(t *testing.T) {
	t.Parallel()
	for _, forgeFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("forge event first=%v", forgeFirst), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
			ck := "cof-" + cloud[:8]
			inactive := false
			c := forgeClaimsFor(id, cloud, "3.0.0")
			c.App.License = &forge.License{Active: &inactive}
			ev := ForgeEvent{Type: forge.EventUpgraded, Claims: c, At: ts(10), IssuedAt: ts(10)}
			if forgeFirst {
				b.recordForge(t, ev)
			}
			b.install(t, payload(t, ck, map[string]any{"installationId": id, "cloudId": cloud}), ts(5), ts(5))
			if !forgeFirst {
				b.recordForge(t, ev)
			}
			byKey, byID := b.get(t, ck), b.get(t, id)
			if byID.ClientKey != ck || byKey.Platform != connectrelay.PlatformConnectOnForge {
				t.Fatalf("by installationId = %s (%s), want the Connect tenant %s", byID.ID(), byID.Platform, ck)
			}
			if byKey.Forge == nil || byKey.Forge.InstallationID != id || byKey.Forge.ClientKey != ck {
				t.Errorf("tenant's forge installation = %+v", byKey.Forge)
			}
			if byKey.LicenseState != connectrelay.LicenseInactive {
				t.Errorf("license = %s, want inactive (Forge app.license)", byKey.LicenseState)
			}
			if n := b.count(t, `SELECT count(*) FROM event_outbox WHERE client_key = $1`, id); n != 0 && !forgeFirst {
				t.Errorf("%d events under the installationId of a linked installation, want them under %s", n, ck)
			}
			if got := b.feedTypes(t, ck); !strings.Contains(strings.Join(got, ","), "tenant.installed") {
				t.Errorf("Connect feed = %v", got)
			}
		})
	}
}

func TestRecordForge_SystemTokenSealedAndLatestExpiryKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	now := time.Now().UTC().Truncate(time.Second)
	long, short, stale := systemToken(now.Add(4*time.Hour)), systemToken(now.Add(2*time.Hour)), systemToken(now.Add(3*time.Hour))
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1"), At: now, SystemToken: long})
	// The token received last wins, even if it expires sooner: it carries
	// the scopes of the latest version.
	b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, Claims: forgeClaimsFor(id, cloud, "1"), At: now.Add(time.Minute), SystemToken: short})
	// A delivery received earlier but recorded later does not put back its
	// older token.
	b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, DedupeKey: "earlier", Claims: forgeClaimsFor(id, cloud, "1"), At: now.Add(30 * time.Second), SystemToken: stale})
	got, err := b.store.ForgeCredentials(testCtx(t), id)
	if err != nil {
		t.Fatalf("ForgeCredentials: %v", err)
	}
	if got.Token != short || !got.ExpiresAt.Equal(now.Add(2*time.Hour)) || got.APIBaseURL != "https://api.atlassian.com/ex/jira/"+cloud {
		t.Errorf("token expiring %v, want the one received last", got.ExpiresAt)
	}
	// An exp far in the future is believed for a day at most.
	forever := forgetest.NewInstallationID()
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(forever, forgetest.NewCloudID(), "1"), At: now, SystemToken: systemToken(now.Add(1000 * time.Hour))})
	if got, err := b.store.ForgeCredentials(testCtx(t), forever); err != nil || !got.ExpiresAt.Equal(now.Add(24*time.Hour)) {
		t.Errorf("far exp stored as %v (%v), want capped at a day", got.ExpiresAt, err)
	}
	var dump string
	if err := b.pool.QueryRow(testCtx(t), `SELECT string_agg(row_to_json(f)::text, '') FROM forge_installations f`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{long, short, stale, strings.Split(long, ".")[1]} {
		if strings.Contains(dump, tok) {
			t.Fatal("the system token is stored in plaintext")
		}
	}
	if strings.Contains(fmt.Sprint(b.get(t, id)), long) {
		t.Error("the tenant view carries the system token")
	}

	expired := forgetest.NewInstallationID()
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(expired, forgetest.NewCloudID(), "1"), At: ts(0), SystemToken: systemToken(now.Add(-time.Minute))})
	if got, err := b.store.ForgeCredentials(testCtx(t), expired); err != nil || !got.ExpiresAt.Before(now) {
		t.Errorf("expired token: %v, %v; want it with its past expiry (the client refuses it)", got.ExpiresAt, err)
	}
	none := forgetest.NewInstallationID()
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(none, forgetest.NewCloudID(), "1"), At: ts(0)})
	if _, err := b.store.ForgeCredentials(testCtx(t), none); !errors.Is(err, product.ErrNoSystemToken) {
		t.Errorf("no token: err = %v, want ErrNoSystemToken", err)
	}
	if _, err := b.store.ForgeCredentials(testCtx(t), forgetest.NewInstallationID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown installation: err = %v, want ErrNotFound", err)
	}
}

func TestRecordForge_RefusesWhatIsNotVerified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := forgeClaimsFor(forgetest.NewInstallationID(), forgetest.NewCloudID(), "1")
	bad := *c
	bad.App.InstallationID = "installation-1"
	for name, ev := range map[string]ForgeEvent{
		"no claims":           {Type: forge.EventInstalled, DedupeKey: "k", At: ts(0)},
		"not an installation": {Type: forge.EventInstalled, DedupeKey: "k", Claims: &bad, At: ts(0)},
		"no dedupe key":       {Type: forge.EventInstalled, Claims: c, At: ts(0)},
		"huge token":          {Type: forge.EventInstalled, DedupeKey: "k", Claims: c, At: ts(0), SystemToken: strings.Repeat("a", 17<<10)},
	} {
		if _, err := b.store.RecordForge(testCtx(t), ev); !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("%s: err = %v, want ErrInvalidPayload", name, err)
		}
	}
}

func TestSystemTokenExpiry_ReadsExpOfAJWTOnly(t *testing.T) {
	t.Parallel()
	exp := time.Unix(1900000000, 0).UTC()
	if got := SystemTokenExpiry(systemToken(exp)); got == nil || !got.Equal(exp) {
		t.Errorf("JWT: %v, want %v", got, exp)
	}
	for _, tok := range []string{"opaque", "a.b.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c",
		"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":-1}`)) + ".c"} {
		if got := SystemTokenExpiry(tok); got != nil {
			t.Errorf("%q: %v, want nil", tok, got)
		}
	}
}

func TestHistory_OfForgeAndConnectOnForgeTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pure, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(pure, cloud, "1"), At: ts(0), IssuedAt: ts(0)})
	b.recordForge(t, ForgeEvent{Type: ForgePreUninstall, Claims: forgeClaimsFor(pure, cloud, "1"), At: ts(5), IssuedAt: ts(5)})
	h := b.history(t, pure)
	if len(h) != 2 || h[0].Type != ForgePreUninstall || h[1].Type != forge.EventInstalled || h[0].ClientKey != pure {
		t.Errorf("pure Forge history = %+v", h)
	}

	linked := forgetest.NewInstallationID()
	b.install(t, payload(t, "cof", map[string]any{"installationId": linked}), ts(1), ts(1))
	b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, Claims: forgeClaimsFor(linked, forgetest.NewCloudID(), "2"), At: ts(9), IssuedAt: ts(9)})
	byKey, byID := b.history(t, "cof"), b.history(t, linked)
	if len(byKey) != 2 || byKey[0].Type != forge.EventUpgraded || byKey[1].Type != EventInstalled {
		t.Errorf("Connect-on-Forge history = %+v, want the upgrade then the Connect install", byKey)
	}
	if fmt.Sprint(byKey) != fmt.Sprint(byID) {
		t.Errorf("history by installationId %+v differs from by clientKey %+v", byID, byKey)
	}
	if _, err := b.store.History(testCtx(t), forgetest.NewInstallationID(), 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown installation: %v, want ErrNotFound", err)
	}
}

func FuzzSystemTokenExpiry(f *testing.F) {
	f.Add(systemToken(time.Unix(1900000000, 0)))
	f.Add("a.eyJleHAiOjF9.c")
	f.Add("a.eyJleHAiOjFlMzAwfQ.c")
	f.Add("..")
	f.Add("opaque-token")
	f.Fuzz(func(t *testing.T, tok string) {
		exp := SystemTokenExpiry(tok)
		if exp != nil && (exp.Unix() <= 0 || exp.Location() != time.UTC) {
			t.Fatalf("expiry %v for %q", exp, tok)
		}
	})
}

// Migration events repeat the stored claims: they are answered from a read,
// without a write, while the stored system token has more than an hour
// left; a token closer to its expiry is replaced.
func TestRecordForge_MigrationDeliveriesWriteOnlyWhatChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	now := time.Now().UTC().Truncate(time.Second)
	first := systemToken(now.Add(3 * time.Hour))
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: forgeClaimsFor(id, cloud, "1"), At: now, SystemToken: first})
	updatedAt := func() time.Time {
		var at time.Time
		if err := b.pool.QueryRow(testCtx(t), `SELECT updated_at FROM forge_installations WHERE installation_id = $1`, id).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	before := updatedAt()
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(id, cloud, "1"), At: now.Add(time.Minute), SystemToken: systemToken(now.Add(4 * time.Hour))})
	if got, _ := b.store.ForgeCredentials(testCtx(t), id); got.Token != first || !updatedAt().Equal(before) {
		t.Errorf("a repeat with a fresh stored token wrote the row (token replaced: %v)", got.Token != first)
	}
	late := systemToken(now.Add(5 * time.Hour))
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(id, cloud, "1"), At: now.Add(2*time.Hour + time.Minute), SystemToken: late})
	if got, _ := b.store.ForgeCredentials(testCtx(t), id); got.Token != late {
		t.Error("a token within an hour of its expiry was not replaced")
	}
	b.recordForge(t, ForgeEvent{Claims: forgeClaimsFor(id, cloud, "2"), At: now.Add(2*time.Hour + 2*time.Minute)})
	if fi, _ := b.store.ForgeInstallation(testCtx(t), id); fi.AppVersion != "2" {
		t.Errorf("new claims not stored: version %q", fi.AppVersion)
	}
}

// A token without app.license says nothing about the license: the stored
// state stays, and no license change is reported when the next licensed
// token agrees with it.
func TestRecordForge_TokenWithoutLicenseKeepsTheState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
	active := true
	licensed := forgeClaimsFor(id, cloud, "1")
	licensed.App.License = &forge.License{Active: &active}
	b.recordForge(t, ForgeEvent{Type: forge.EventInstalled, Claims: licensed, At: ts(0), IssuedAt: ts(0)})
	b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, Claims: forgeClaimsFor(id, cloud, "2"), At: ts(5), IssuedAt: ts(5)})
	if got := b.get(t, id).LicenseState; got != connectrelay.LicenseActive {
		t.Errorf("after a token without app.license: %s, want still active", got)
	}
	again := forgeClaimsFor(id, cloud, "3")
	again.App.License = &forge.License{Active: &active}
	b.recordForge(t, ForgeEvent{Type: forge.EventUpgraded, Claims: again, At: ts(9), IssuedAt: ts(9)})
	for _, typ := range b.feedTypes(t, id) {
		if typ == string(connectrelay.EventLicenseChanged) {
			t.Errorf("feed %v reports a license change that did not happen", b.feedTypes(t, id))
		}
	}
}

func TestRecordForge_ConcurrentWithTheConnectInstallIsAlwaysLinked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rounds = 30
	for i := range rounds {
		id, cloud := forgetest.NewInstallationID(), forgetest.NewCloudID()
		ck := fmt.Sprintf("race-%d", i)
		ev := ForgeEvent{Type: forge.EventInstalled, DedupeKey: "k-" + id, Claims: forgeClaimsFor(id, cloud, "1.0.0"), At: ts(10), IssuedAt: ts(10)}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Go(func() {
			<-start
			_, errs[0] = b.store.Install(testCtx(t), payload(t, ck, map[string]any{"installationId": id, "cloudId": cloud}), ReceivedAt(ts(5), ts(5)))
		})
		wg.Go(func() {
			<-start
			_, errs[1] = b.store.RecordForge(testCtx(t), ev)
		})
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if got := b.get(t, id); got.ClientKey != ck {
			t.Fatalf("round %d: installation %s belongs to %q after a concurrent install and Forge event, want %s",
				i, id, got.ClientKey, ck)
		}
	}
}
