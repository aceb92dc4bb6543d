package ops

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckStaleSince_OnlyMoreThan24hAgo(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since time.Time
		ok    bool
	}{
		{now.Add(-25 * time.Hour), true},
		{now.Add(-24*time.Hour - time.Second), true},
		{now.Add(-24 * time.Hour), false},
		{now.Add(-time.Hour), false},
		{now.Add(time.Hour), false}, // in the future
	} {
		err := CheckStaleSince(tc.since, now)
		if tc.ok != (err == nil) {
			t.Errorf("CheckStaleSince(%s) = %v, want ok=%v", tc.since, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrTooRecent) || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "--since")) {
			t.Errorf("CheckStaleSince(%s) = %v, want ErrTooRecent naming --since", tc.since, err)
		}
	}
}

func TestTaskSelector_ExactlyOneKnownSelector(t *testing.T) {
	for _, tc := range []struct {
		sel   TaskSelector
		names string // "" = valid
	}{
		{TaskSelector{Tenant: "ck"}, ""},
		{TaskSelector{Transfer: "tr"}, ""},
		{TaskSelector{Type: "migration:import"}, ""},
		{TaskSelector{}, "exactly one of --tenant, --transfer or --type"},
		{TaskSelector{Tenant: "ck", Transfer: "tr"}, "exactly one"},
		{TaskSelector{Tenant: "ck", Transfer: "tr", Type: "tenant:init"}, "exactly one"},
		{TaskSelector{Type: "migration:imports"}, "--type"},
	} {
		err := tc.sel.Validate()
		if tc.names == "" {
			if err != nil {
				t.Errorf("%+v: %v, want valid", tc.sel, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%+v: %v, want ErrInvalidArgument naming %s", tc.sel, err, tc.names)
		}
	}
}

func TestTenantFilter_NamesTheBadFlag(t *testing.T) {
	for _, tc := range []struct {
		f     TenantFilter
		names string
	}{
		{TenantFilter{}, ""},
		{TenantFilter{State: "installed", License: "inactive"}, ""},
		{TenantFilter{State: "all", License: "unknown"}, ""},
		{TenantFilter{State: "Installed"}, "--state"},
		{TenantFilter{License: "expired"}, "--license"},
	} {
		err := tc.f.Validate()
		if (tc.names == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.names)) {
			t.Errorf("%+v: %v, want error naming %q", tc.f, err, tc.names)
		}
	}
}

func TestBaseURLNote_ParsesTheStoresChangeNotes(t *testing.T) {
	for _, tc := range []struct {
		note     string
		from, to string
	}{
		{`baseUrl "https://a.atlassian.net" -> "https://b.atlassian.net"`, `"https://a.atlassian.net"`, `"https://b.atlassian.net"`},
		{`baseUrl "https://a.atlassian.net/wiki?x=\"y\"" -> "https://b"`, `"https://a.atlassian.net/wiki?x=\"y\""`, `"https://b"`},
		{`displayUrl "https://a" -> "https://b"`, "", ""},
		{`site import: baseUrl "https://a" also held by clientKey(s) x`, "", ""},
	} {
		m := baseURLNote.FindStringSubmatch(tc.note)
		if tc.from == "" {
			if m != nil {
				t.Errorf("%q matched %q, want no match", tc.note, m)
			}
			continue
		}
		if m == nil || m[1] != tc.from || m[2] != tc.to {
			t.Errorf("%q = %q, want %s -> %s", tc.note, m, tc.from, tc.to)
		}
	}
}
