package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/google/go-cmp/cmp"
)

// eventSummary is the part of an Event a test states exactly (ids and times aside).
type eventSummary struct {
	Type    string
	Applied bool
	Changes []string
}

// summaries returns the history oldest first.
func summaries(events []Event) []eventSummary {
	out := make([]eventSummary, len(events))
	for i, e := range events {
		out[len(events)-1-i] = eventSummary{e.Type, e.Applied, e.Changes}
	}
	return out
}

func TestInstallNewTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := payload(t, "ck-new", map[string]any{"futureField": map[string]any{"a": 1}, "publicKey": "pk"})
	res := b.install(t, p, ts(1), ts(0))

	if !res.Created || !res.Applied || res.EventID == 0 || len(res.LinkedClientKeys) != 0 {
		t.Errorf("result = %+v, want created, applied, an event id, no links", res)
	}
	if diff := cmp.Diff([]string{"installed (new tenant)"}, res.Changes); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
	got := b.get(t, "ck-new")
	wantHost := p.HostInfo
	wantHost.Extra = json.RawMessage(`{"futureField": {"a": 1}}`) // as jsonb prints it
	want := connectrelay.Tenant{
		HostInfo:          wantHost,
		Platform:          connectrelay.PlatformConnect,
		Installed:         true,
		Enabled:           false,
		FirstInstalledAt:  ts(1),
		LastInstalledAt:   ts(1),
		LastLifecycleAt:   ts(1),
		DataIssuedAt:      ts(0),
		InstalledIssuedAt: ts(0),
		EnabledIssuedAt:   ts(0),
		LicenseState:      connectrelay.LicenseUnknown,
		WebhookEndpoints:  []string{},
		SecretKeyID:       b.box.PrimaryKeyID(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, res.Tenant); diff != "" {
		t.Errorf("InstallResult.Tenant (-want +got):\n%s", diff)
	}
	if s := b.secret(t, "ck-new"); s != "secret-of-ck-new" {
		t.Errorf("SharedSecret = %q", s)
	}
	h := b.history(t, "ck-new")
	wantEvent := Event{ID: res.EventID, ClientKey: "ck-new", Type: EventInstalled, At: ts(1), IssuedAt: ts(0),
		Applied: true, Changes: []string{"installed (new tenant)"}}
	if diff := cmp.Diff([]Event{wantEvent}, h); diff != "" {
		t.Errorf("History (-want +got):\n%s", diff)
	}
}

func TestInstallSameTwiceClaimsNoChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := payload(t, "ck", map[string]any{"n": json.Number("1e2"), "obj": map[string]any{"b": 1, "a": 2}})
	first := b.install(t, p, ts(1), ts(1))
	// The same install again, re-sent as Atlassian does, with the number spelt
	// differently and keys in another order: still no change.
	same := payload(t, "ck", map[string]any{"n": json.Number("100"), "obj": map[string]any{"a": 2, "b": 1}})
	for i := 2; i <= 3; i++ {
		res := b.install(t, same, ts(i), ts(i))
		if res.Created || !res.Applied || len(res.Changes) != 0 {
			t.Errorf("install %d = created %v, applied %v, changes %q; want an applied no-op", i, res.Created, res.Applied, res.Changes)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM tenants`); n != 1 {
		t.Errorf("%d tenant rows, want 1", n)
	}
	want := []eventSummary{
		{EventInstalled, true, []string{"installed (new tenant)"}},
		{EventInstalled, true, []string{}},
		{EventInstalled, true, []string{}},
	}
	if diff := cmp.Diff(want, summaries(b.history(t, "ck"))); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	got := b.get(t, "ck")
	if !got.FirstInstalledAt.Equal(first.Tenant.FirstInstalledAt) || !got.LastInstalledAt.Equal(ts(3)) {
		t.Errorf("FirstInstalledAt, LastInstalledAt = %v, %v; want %v, %v", got.FirstInstalledAt, got.LastInstalledAt, ts(1), ts(3))
	}
	if s := b.secret(t, "ck"); s != "secret-of-ck" {
		t.Errorf("SharedSecret = %q", s)
	}
}

func TestInstallRecordsWhatChanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "ck", map[string]any{"futureField": "v1", "gone": true}), ts(1), ts(1))

	tests := []struct {
		desc      string
		overrides map[string]any
		want      []string
	}{
		{"secret rotation", map[string]any{"sharedSecret": "rotated", "futureField": "v1", "gone": true},
			[]string{"secret rotated"}},
		{"site rename", map[string]any{"sharedSecret": "rotated", "futureField": "v1", "gone": true, "baseUrl": "https://renamed.atlassian.net"},
			[]string{`baseUrl "https://ck.atlassian.net" -> "https://renamed.atlassian.net"`}},
		{"descriptor upgrade", map[string]any{
			"sharedSecret": "rotated", "baseUrl": "https://renamed.atlassian.net",
			"pluginsVersion": "1.0.1", "serverVersion": "100200", "futureField": "v2", "added": 1, "cloudId": "c-1",
		}, []string{
			`serverVersion "server-version" -> "100200"`,
			`pluginsVersion "1.0.0" -> "1.0.1"`,
			`cloudId "" -> "c-1"`,
			"extra fields changed: added, futureField, gone",
		}},
	}
	for i, tc := range tests {
		res := b.install(t, payload(t, "ck", tc.overrides), ts(10+i), ts(10+i))
		if diff := cmp.Diff(tc.want, res.Changes); diff != "" {
			t.Errorf("%s: changes (-want +got):\n%s", tc.desc, diff)
		}
		if res.Tenant.ClientKey != "ck" || res.Tenant.DataIssuedAt != ts(10+i) || res.EventID == 0 {
			t.Errorf("%s: result tenant %q data iat %v event %d; want the stored tenant and its history row",
				tc.desc, res.Tenant.ClientKey, res.Tenant.DataIssuedAt, res.EventID)
		}
	}
	wantFeed := []string{"tenant.installed", "tenant.updated", "tenant.updated", "tenant.updated"}
	if diff := cmp.Diff(wantFeed, b.feedTypes(t, "ck")); diff != "" {
		t.Errorf("event feed (-want +got):\n%s", diff)
	}
	got := b.get(t, "ck")
	if got.BaseURL != "https://renamed.atlassian.net" || got.PluginsVersion != "1.0.1" || got.CloudID != "c-1" {
		t.Errorf("tenant = %+v, want the last install saved", got.HostInfo)
	}
	if s := b.secret(t, "ck"); s != "rotated" {
		t.Errorf("SharedSecret = %q, want rotated", s)
	}
	if old, err := b.store.ByBaseURL(testCtx(t), "https://ck.atlassian.net"); err != nil || len(old) != 0 {
		t.Errorf("ByBaseURL(old) = %d tenants, %v; want none", len(old), err)
	}
	renamed, err := b.store.ByBaseURL(testCtx(t), "https://renamed.atlassian.net")
	if err != nil || len(renamed) != 1 || renamed[0].ClientKey != "ck" {
		t.Errorf("ByBaseURL(new) = %v, %v; want ck", renamed, err)
	}
	if h := b.history(t, "ck"); len(h) != 4 {
		t.Errorf("%d history rows, want 4", len(h))
	}
}

func TestSiteImportLinksTenantsAndLeavesOldOneAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const site = "https://shared.atlassian.net"
	b.install(t, payload(t, "old", map[string]any{"baseUrl": site}), ts(1), ts(1))
	before := b.rowJSON(t, "old")

	res := b.install(t, payload(t, "new", map[string]any{"baseUrl": site}), ts(5), ts(5))

	if !res.Created || !slices.Equal(res.LinkedClientKeys, []string{"old"}) {
		t.Errorf("result created %v, linked %q; want created, [old]", res.Created, res.LinkedClientKeys)
	}
	if diff := cmp.Diff([]string{"installed (new tenant)", `site import: baseUrl "https://shared.atlassian.net" also held by clientKey(s) old`}, res.Changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tenant.installed", "tenant.site_import_detected"}, b.feedTypes(t, "new")); diff != "" {
		t.Errorf("event feed of new (-want +got):\n%s", diff)
	}
	if after := b.rowJSON(t, "old"); after != before {
		t.Errorf("old tenant row changed:\nbefore %s\nafter  %s", before, after)
	}
	if b.secret(t, "old") != "secret-of-old" || b.secret(t, "new") != "secret-of-new" {
		t.Error("secrets mixed up between the two tenants")
	}
	wantLinks := []Link{{ClientKey: "new", OtherClientKey: "old", BaseURL: site, DetectedAt: ts(5)}}
	for _, ck := range []string{"old", "new"} {
		got, err := b.store.Links(testCtx(t), ck)
		if err != nil {
			t.Fatalf("Links(%s): %v", ck, err)
		}
		if diff := cmp.Diff(wantLinks, got); diff != "" {
			t.Errorf("Links(%s) (-want +got):\n%s", ck, diff)
		}
	}
	wantOld := []eventSummary{
		{EventInstalled, true, []string{"installed (new tenant)"}},
		{EventLinked, true, []string{`site import: baseUrl "https://shared.atlassian.net" now also held by new clientKey new`}},
	}
	if diff := cmp.Diff(wantOld, summaries(b.history(t, "old"))); diff != "" {
		t.Errorf("old history (-want +got):\n%s", diff)
	}
	both, err := b.store.ByBaseURL(testCtx(t), site)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, tn := range both {
		keys = append(keys, tn.ClientKey)
	}
	if diff := cmp.Diff([]string{"old", "new"}, keys); diff != "" {
		t.Errorf("ByBaseURL (-want +got):\n%s", diff)
	}

	// A re-sent install of the new tenant finds nothing new.
	again := b.install(t, payload(t, "new", map[string]any{"baseUrl": site}), ts(6), ts(6))
	if len(again.Changes) != 0 || len(again.LinkedClientKeys) != 0 {
		t.Errorf("re-sent install: changes %q, linked %q; want none", again.Changes, again.LinkedClientKeys)
	}
	if n := b.count(t, `SELECT count(*) FROM tenant_links`); n != 1 {
		t.Errorf("%d link rows, want 1", n)
	}
}

func TestRenameOntoAnotherTenantsBaseURLIsLinked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "a", nil), ts(1), ts(1))
	b.install(t, payload(t, "b", nil), ts(1), ts(1))
	res := b.install(t, payload(t, "b", map[string]any{"baseUrl": "https://a.atlassian.net"}), ts(2), ts(2))
	want := []string{
		`baseUrl "https://b.atlassian.net" -> "https://a.atlassian.net"`,
		`baseUrl "https://a.atlassian.net" also held by clientKey(s) a`,
	}
	if diff := cmp.Diff(want, res.Changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	h := b.history(t, "a")
	if h[0].Type != EventLinked || !strings.Contains(h[0].Changes[0], `renamed from "https://b.atlassian.net"`) {
		t.Errorf("a's latest event = %+v, want a linked note naming the rename", h[0])
	}
}

func TestConcurrentSiteImportsAreAllLinked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const site = "https://crowded.atlassian.net"
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	var wg sync.WaitGroup
	errs := make([]error, len(keys))
	for i, ck := range keys {
		wg.Go(func() {
			_, errs[i] = b.store.Install(testCtx(t), payload(t, ck, map[string]any{"baseUrl": site}), ReceivedAt(ts(1), ts(1)))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Install: %v", err)
	}
	// Each install sees every one committed before it and links itself to one of
	// them (the representative): one link per install after the first, and the
	// links connect the whole group, so no site import is missed.
	rows, err := b.pool.Query(testCtx(t), `SELECT client_key, other_client_key FROM tenant_links`)
	if err != nil {
		t.Fatal(err)
	}
	parent := map[string]string{}
	var find func(string) string
	find = func(k string) string {
		if p, ok := parent[k]; ok && p != k {
			return find(p)
		}
		return k
	}
	links := 0
	for rows.Next() {
		var a, o string
		if err := rows.Scan(&a, &o); err != nil {
			t.Fatal(err)
		}
		links++
		parent[find(a)] = find(o)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if links != len(keys)-1 {
		t.Errorf("%d links; want %d (one per install after the first)", links, len(keys)-1)
	}
	for _, k := range keys {
		if find(k) != find(keys[0]) {
			t.Errorf("tenant %s is not linked to the group of %s", k, keys[0])
		}
	}
}

// A site import writes a constant amount per install: one link and one linked
// history row on the representative, however many tenants share the baseUrl, while
// LinkedClientKeys still names all of them.
func TestSiteImportWritesOneLinkAndOneHistoryRowPerInstall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const site = "https://many.atlassian.net"
	const n = 6
	for i := range n {
		res, err := b.store.Install(testCtx(t), payload(t, fmt.Sprintf("m%d", i), map[string]any{"baseUrl": site}), ReceivedAt(ts(i+1), ts(i+1)))
		if err != nil {
			t.Fatalf("Install m%d: %v", i, err)
		}
		if len(res.LinkedClientKeys) != i {
			t.Errorf("install m%d: %d linked clientKeys; want %d", i, len(res.LinkedClientKeys), i)
		}
	}
	var links, linked int
	if err := b.pool.QueryRow(testCtx(t), `SELECT count(*) FROM tenant_links WHERE other_client_key = 'm0'`).Scan(&links); err != nil {
		t.Fatal(err)
	}
	if err := b.pool.QueryRow(testCtx(t), `SELECT count(*) FROM tenant_events WHERE type = $1`, EventLinked).Scan(&linked); err != nil {
		t.Fatal(err)
	}
	if links != n-1 || linked != n-1 {
		t.Errorf("%d links to m0 and %d linked history rows; want %d each", links, linked, n-1)
	}
}

func TestUninstallKeepsSecretAndReinstallIsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	b.install(t, payload(t, "ck", nil), ts(1), ts(1))
	if _, err := b.store.SetEnabled(ctx, "ck", true, ReceivedAt(ts(2), ts(2))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Uninstall(ctx, "ck", ReceivedAt(ts(3), ts(3))); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	got := b.get(t, "ck")
	if got.Installed || got.Enabled {
		t.Errorf("after uninstall installed, enabled = %v, %v; want false, false", got.Installed, got.Enabled)
	}
	if s := b.secret(t, "ck"); s != "secret-of-ck" {
		t.Errorf("secret after uninstall = %q, want it kept", s)
	}

	res := b.install(t, payload(t, "ck", nil), ts(4), ts(4))
	if !res.Tenant.Installed || res.Tenant.Enabled {
		t.Errorf("after reinstall installed, enabled = %v, %v; want true, false (installed enables nothing)", res.Tenant.Installed, res.Tenant.Enabled)
	}
	want := []eventSummary{
		{EventInstalled, true, []string{"installed (new tenant)"}},
		{EventEnabled, true, []string{"enabled false -> true"}},
		{EventUninstalled, true, []string{"installed true -> false", "enabled true -> false"}},
		{EventInstalled, true, []string{"reinstalled after uninstall"}},
	}
	if diff := cmp.Diff(want, summaries(b.history(t, "ck"))); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

func TestUnknownClientKeyIsNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	calls := map[string]func() error{
		"Get":          func() error { _, err := b.store.Get(ctx, "nope"); return err },
		"SharedSecret": func() error { _, err := b.store.SharedSecret(ctx, "nope"); return err },
		"History":      func() error { _, err := b.store.History(ctx, "nope", 10); return err },
		"Links":        func() error { _, err := b.store.Links(ctx, "nope"); return err },
		"Uninstall":    func() error { _, err := b.store.Uninstall(ctx, "nope", ReceivedAt(ts(1), ts(1))); return err },
		"SetEnabled":   func() error { _, err := b.store.SetEnabled(ctx, "nope", true, ReceivedAt(ts(1), ts(1))); return err },
		"SetLicense":   func() error { return b.store.SetLicense(ctx, "nope", connectrelay.LicenseActive, ts(1)) },
		"SetWebhookRegistered": func() error {
			return b.store.SetWebhookRegistered(ctx, "nope", []string{"https://app/migration/events"}, ts(1))
		},
		"cache": func() error {
			_, err := NewSecretCache(b.store, time.Minute).SharedSecret(ctx, "nope", false)
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) {
			t.Errorf("%s(unknown) = %v, want ErrNotFound", name, err)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM tenant_events`); n != 0 {
		t.Errorf("%d history rows for unknown tenants, want 0", n)
	}
}

func TestInstallRejectsIncompletePayload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := payload(t, "ck", nil)
	p.SharedSecret = ""
	if _, err := b.store.Install(testCtx(t), p, ReceivedAt(ts(1), ts(1))); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("Install without secret = %v, want ErrInvalidPayload", err)
	}
	p = payload(t, "ck", nil)
	p.Extra = json.RawMessage(`[1]`)
	if _, err := b.store.Install(testCtx(t), p, ReceivedAt(ts(1), ts(1))); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("Install with array Extra = %v, want ErrInvalidPayload", err)
	}
	// A hand-built payload smuggling the secret into Extra: the store drops it.
	p = payload(t, "ck", nil)
	p.Extra = json.RawMessage(`{"sharedSecret":"secret-of-ck","publicKey":"pk","kept":1}`)
	res := b.install(t, p, ts(1), ts(1))
	if string(res.Tenant.Extra) != `{"kept": 1}` {
		t.Errorf("stored Extra = %s, want only kept", res.Tenant.Extra)
	}
}

func TestOutOfOrderEvents(t *testing.T) {
	t.Parallel()
	type step struct {
		event  string // installed:<secret>, uninstalled, enabled, disabled
		iat    int
		wantOK bool // applied
	}
	tests := []struct {
		desc          string
		steps         []step
		wantInstalled bool
		wantEnabled   bool
		wantSecret    string
	}{
		{"late enabled after disabled", []step{{"enabled", 10, true}, {"disabled", 20, true}, {"enabled", 15, false}}, true, false, "s0"},
		{"late disabled after enabled", []step{{"disabled", 20, true}, {"enabled", 30, true}, {"disabled", 25, false}}, true, true, "s0"},
		{"equal iat applies in processing order", []step{{"disabled", 20, true}, {"enabled", 20, true}}, true, true, "s0"},
		{"enabled after uninstall", []step{{"uninstalled", 20, true}, {"enabled", 20, false}}, false, false, "s0"},
		{"late uninstalled after reinstall", []step{{"uninstalled", 20, true}, {"installed:s1", 30, true}, {"uninstalled", 25, false}}, true, false, "s1"},
		{"late installed does not roll the secret back", []step{{"installed:s2", 30, true}, {"installed:s1", 20, false}}, true, false, "s2"},
		{"installed older than an uninstall saves data but stays uninstalled", []step{{"uninstalled", 20, true}, {"installed:s1", 10, true}}, false, false, "s1"},
		{"uninstalled older than a disabled still applies", []step{{"disabled", 20, true}, {"uninstalled", 15, true}}, false, false, "s0"},
		{"enabled from before an uninstall does not apply after reinstall", []step{{"uninstalled", 20, true}, {"installed:s1", 30, true}, {"enabled", 15, false}}, true, false, "s1"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := testCtx(t)
			b.install(t, payload(t, "ck", map[string]any{"sharedSecret": "s0"}), ts(0), ts(0))
			for i, s := range tc.steps {
				at := ts(100 + i)
				iat := ts(s.iat)
				var err error
				switch {
				case strings.HasPrefix(s.event, "installed:"):
					_, err = b.store.Install(ctx, payload(t, "ck", map[string]any{"sharedSecret": strings.TrimPrefix(s.event, "installed:")}), ReceivedAt(at, iat))
				case s.event == "uninstalled":
					_, err = b.store.Uninstall(ctx, "ck", ReceivedAt(at, iat))
				default:
					_, err = b.store.SetEnabled(ctx, "ck", s.event == "enabled", ReceivedAt(at, iat))
				}
				if err != nil {
					t.Fatalf("step %d %s: %v", i, s.event, err)
				}
				if e := b.history(t, "ck")[0]; e.Applied != s.wantOK || !e.IssuedAt.Equal(iat) {
					t.Errorf("step %d %s: applied %v (changes %q), issued %v; want applied %v", i, s.event, e.Applied, e.Changes, e.IssuedAt, s.wantOK)
				}
			}
			got := b.get(t, "ck")
			if got.Installed != tc.wantInstalled || got.Enabled != tc.wantEnabled {
				t.Errorf("installed, enabled = %v, %v; want %v, %v", got.Installed, got.Enabled, tc.wantInstalled, tc.wantEnabled)
			}
			if s := b.secret(t, "ck"); s != tc.wantSecret {
				t.Errorf("secret = %q, want %q", s, tc.wantSecret)
			}
			if !got.LastLifecycleAt.Equal(ts(100 + len(tc.steps) - 1)) {
				t.Errorf("LastLifecycleAt = %v, want the last event's receive time", got.LastLifecycleAt)
			}
		})
	}
}

func version(i int) string { return fmt.Sprintf("1.0.%d", i) }

func TestConcurrentInstallsOfOneClientKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	sent := make([]string, n)
	results := make([]InstallResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		sent[i] = fmt.Sprintf("secret-%02d", i)
		p := payload(t, "ck", map[string]any{"sharedSecret": sent[i], "pluginsVersion": version(i)})
		wg.Go(func() {
			<-start
			results[i], errs[i] = b.store.Install(testCtx(t), p, ReceivedAt(ts(1), ts(1)))
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if c := b.count(t, `SELECT count(*) FROM tenants`); c != 1 {
		t.Errorf("%d tenant rows, want 1", c)
	}
	created := 0
	for _, r := range results {
		if r.Created {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d installs report Created, want 1", created)
	}
	secret := b.secret(t, "ck")
	if !slices.Contains(sent, secret) {
		t.Errorf("stored secret %q is not one of those sent", secret)
	}
	h := b.history(t, "ck")
	if len(h) != n {
		t.Fatalf("%d history rows, want %d", len(h), n)
	}
	// Replay the history in commit order (event ids): each install must have been
	// compared with the one committed just before it, which only holds if the row
	// lock serialised them. Each carries its own pluginsVersion to make that visible.
	sentBy := make(map[int64]int, n)
	for i, r := range results {
		sentBy[r.EventID] = i
	}
	slices.Reverse(h) // oldest first
	for k, e := range h {
		i, ok := sentBy[e.ID]
		if !ok {
			t.Fatalf("history row %d belongs to no install", e.ID)
		}
		if k == 0 {
			if diff := cmp.Diff([]string{"installed (new tenant)"}, e.Changes); diff != "" || !results[i].Created {
				t.Errorf("first row (-want +got):\n%s", diff)
			}
			continue
		}
		prev := sentBy[h[k-1].ID]
		want := []string{"secret rotated", fmt.Sprintf("pluginsVersion %q -> %q", version(prev), version(i))}
		if diff := cmp.Diff(want, e.Changes); diff != "" {
			t.Errorf("row %d of %d (-want +got):\n%s", k, n, diff)
		}
	}
	if last := sentBy[h[n-1].ID]; sent[last] != secret {
		t.Errorf("last recorded install sent %q, but %q is stored", sent[last], secret)
	}
}

func TestDisabledAndUninstalledRace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	type order struct {
		desc                        string
		disabledIAT, uninstalledIAT int
		concurrent, disabledFirst   bool
	}
	var orders []order
	for _, iats := range [][2]int{{0, 0}, {0, 1}, {1, 0}} {
		orders = append(orders,
			order{fmt.Sprintf("disabled then uninstalled, iats %v", iats), iats[0], iats[1], false, true},
			order{fmt.Sprintf("uninstalled then disabled, iats %v", iats), iats[0], iats[1], false, false})
		for range 5 {
			orders = append(orders, order{fmt.Sprintf("concurrent, iats %v", iats), iats[0], iats[1], true, false})
		}
	}
	for i, o := range orders {
		ck := fmt.Sprintf("ck-%d", i)
		b.install(t, payload(t, ck, nil), ts(0), ts(0))
		if _, err := b.store.SetEnabled(ctx, ck, true, ReceivedAt(ts(1), ts(1))); err != nil {
			t.Fatal(err)
		}
		disable := func() error {
			_, err := b.store.SetEnabled(ctx, ck, false, ReceivedAt(ts(10), ts(10+o.disabledIAT)))
			return err
		}
		uninstall := func() error {
			_, err := b.store.Uninstall(ctx, ck, ReceivedAt(ts(10), ts(10+o.uninstalledIAT)))
			return err
		}
		var err1, err2 error
		switch {
		case o.concurrent:
			start := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { <-start; err1 = disable() })
			wg.Go(func() { <-start; err2 = uninstall() })
			close(start)
			wg.Wait()
		case o.disabledFirst:
			err1, err2 = disable(), uninstall()
		default:
			err2, err1 = uninstall(), disable()
		}
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("%s: %v", o.desc, err)
		}
		got := b.get(t, ck)
		if got.Installed || got.Enabled {
			t.Errorf("%s: installed, enabled = %v, %v; want false, false", o.desc, got.Installed, got.Enabled)
		}
		if s := b.secret(t, ck); s != "secret-of-"+ck {
			t.Errorf("%s: secret lost", o.desc)
		}
		if h := b.history(t, ck); len(h) != 4 {
			t.Errorf("%s: %d history rows, want 4", o.desc, len(h))
		}
	}
}

func TestLicenseAndWebhookRegistration(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	b.install(t, payload(t, "ck", nil), ts(0), ts(0))

	steps := []struct {
		state connectrelay.LicenseState
		at    int
	}{{connectrelay.LicenseActive, 10}, {connectrelay.LicenseActive, 20}, {connectrelay.LicenseInactive, 15}, {connectrelay.LicenseInactive, 30}}
	for _, s := range steps {
		if err := b.store.SetLicense(ctx, "ck", s.state, ts(s.at)); err != nil {
			t.Fatalf("SetLicense(%s, %d): %v", s.state, s.at, err)
		}
	}
	got := b.get(t, "ck")
	if got.LicenseState != connectrelay.LicenseInactive || got.LicenseCheckedAt == nil || !got.LicenseCheckedAt.Equal(ts(30)) {
		t.Errorf("license = %s at %v, want inactive at %v", got.LicenseState, got.LicenseCheckedAt, ts(30))
	}
	if err := b.store.SetLicense(ctx, "ck", "expired", ts(40)); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("SetLicense(unknown state) = %v, want an error", err)
	}

	eps := []string{"https://app.example.com/migration/events"}
	for _, at := range []int{50, 60} {
		if err := b.store.SetWebhookRegistered(ctx, "ck", eps, ts(at)); err != nil {
			t.Fatalf("SetWebhookRegistered: %v", err)
		}
	}
	if err := b.store.SetWebhookRegistered(ctx, "ck", []string{"https://stale.example.com"}, ts(55)); err != nil {
		t.Fatalf("SetWebhookRegistered(stale): %v", err)
	}
	got = b.get(t, "ck")
	if !slices.Equal(got.WebhookEndpoints, eps) || got.WebhookRegisteredAt == nil || !got.WebhookRegisteredAt.Equal(ts(60)) {
		t.Errorf("webhook = %q at %v, want %q at %v", got.WebhookEndpoints, got.WebhookRegisteredAt, eps, ts(60))
	}

	want := []eventSummary{
		{EventInstalled, true, []string{"installed (new tenant)"}},
		{EventLicense, true, []string{"license unknown -> active"}},
		{EventLicense, true, []string{"license active -> inactive"}},
		{EventWebhook, true, []string{`migration webhook endpoints [] -> ["https://app.example.com/migration/events"]`}},
	}
	if diff := cmp.Diff(want, summaries(b.history(t, "ck"))); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

func TestListPagesByClientKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, ck := range []string{"c", "a", "b"} {
		b.install(t, payload(t, ck, nil), ts(0), ts(0))
	}
	var pages [][]string
	for _, off := range []int{0, 2} {
		tenants, err := b.store.List(testCtx(t), 2, off)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var keys []string
		for _, tn := range tenants {
			keys = append(keys, tn.ClientKey)
		}
		pages = append(pages, keys)
	}
	if diff := cmp.Diff([][]string{{"a", "b"}, {"c"}}, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestHistoryLimitNewestFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "ck", nil), ts(0), ts(0))
	for i := 1; i <= 4; i++ {
		if _, err := b.store.SetEnabled(testCtx(t), "ck", i%2 == 1, ReceivedAt(ts(i), ts(i))); err != nil {
			t.Fatal(err)
		}
	}
	h, err := b.store.History(testCtx(t), "ck", 2)
	if err != nil {
		t.Fatal(err)
	}
	got := []time.Time{h[0].At, h[1].At}
	if diff := cmp.Diff([]time.Time{ts(4), ts(3)}, got); diff != "" {
		t.Errorf("History(limit 2) times (-want +got):\n%s", diff)
	}
}

func TestPage_FiltersAndPagesByClientKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	for _, ck := range []string{"ck-a", "ck-b", "ck-c", "ck-d"} {
		b.install(t, payload(t, ck, nil), ts(0), ts(0))
	}
	if _, err := b.store.Uninstall(ctx, "ck-b", ReceivedAt(ts(1), ts(1))); err != nil {
		t.Fatal(err)
	}
	if err := b.store.SetLicense(ctx, "ck-c", connectrelay.LicenseActive, ts(2)); err != nil {
		t.Fatal(err)
	}
	installed := true
	var got []string
	after := ""
	for range 5 {
		page, next, err := b.store.Page(ctx, Query{Installed: &installed, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range page {
			got = append(got, tn.ClientKey)
		}
		if next == "" {
			break
		}
		after = next
	}
	if diff := cmp.Diff([]string{"ck-a", "ck-c", "ck-d"}, got); diff != "" {
		t.Errorf("installed tenants, 2 per page (-want +got):\n%s", diff)
	}
	page, next, err := b.store.Page(ctx, Query{License: connectrelay.LicenseActive})
	if err != nil || next != "" || len(page) != 1 || page[0].ClientKey != "ck-c" {
		t.Errorf("active tenants = %v, next %q (%v), want ck-c only", page, next, err)
	}
}
