package connect

import (
	"testing"
)

func TestHostPolicyCheckBaseURL(t *testing.T) {
	p, err := NewHostPolicy([]string{"*.atlassian.net", " *.JIRA.com ", "*.jira-dev.com", "localhost", "127.0.0.1", "::1", ""})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		raw   string
		allow bool
	}{
		{"jira cloud site", "https://example.atlassian.net", true},
		{"confluence with /wiki path", "https://example.atlassian.net/wiki", true},
		{"upper-case host", "https://EXAMPLE.Atlassian.NET", true},
		{"glob from mixed-case setting", "https://old.jira.com", true},
		{"loopback http for local development", "http://localhost:2990/jira", true},
		{"loopback IPv4 http", "http://127.0.0.1:8080", true},
		{"loopback IPv6 http", "http://[::1]:8080", true},
		{"star does not cross a dot", "https://a.b.atlassian.net", false},
		{"bare domain does not match *.domain", "https://atlassian.net", false},
		{"suffix trick", "https://evil-atlassian.net", false},
		{"host embedding the domain", "https://example.atlassian.net.evil.com", false},
		{"trailing-dot host", "https://example.atlassian.net.", false},
		{"foreign product host", "https://evil.example.com", false},
		{"http on a real host", "http://example.atlassian.net", false},
		{"other scheme", "ftp://example.atlassian.net", false},
		{"userinfo", "https://user:pw@example.atlassian.net", false},
		{"userinfo pointing elsewhere", "https://example.atlassian.net@evil.com", false},
		{"query", "https://example.atlassian.net?x=1", false},
		{"empty query", "https://example.atlassian.net?", false},
		{"fragment", "https://example.atlassian.net#f", false},
		{"relative", "/wiki", false},
		{"scheme-relative", "//example.atlassian.net", false},
		{"opaque", "https:example.atlassian.net", false},
		{"empty", "", false},
		{"unparsable", "https://exa mple.atlassian.net", false},
		{"backslash trick", `https://evil.com\@example.atlassian.net`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := p.CheckBaseURL(tc.raw)
			if tc.allow {
				if err != nil || u == nil {
					t.Fatalf("CheckBaseURL(%q) = %v, %v; want allowed", tc.raw, u, err)
				}
				return
			}
			assertIs(t, err, ErrProductHostNotAllowed)
		})
	}
}

func TestNewHostPolicyRefusesBadGlobs(t *testing.T) {
	tests := []struct {
		name  string
		globs []string
	}{
		{"none", nil},
		{"only blanks", []string{" ", ""}},
		{"scheme in glob", []string{"https://*.atlassian.net"}},
		{"path in glob", []string{"*.atlassian.net/wiki"}},
		{"empty label", []string{"*..atlassian.net"}},
		{"leading dot", []string{".atlassian.net"}},
		{"trailing dot on a star glob", []string{"*.atlassian.net."}},
		{"zone in an entry", []string{"fe80::1%eth0"}},
		{"regex metacharacters", []string{"(.*)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewHostPolicy(tc.globs); err == nil {
				t.Fatalf("NewHostPolicy(%q) accepted", tc.globs)
			}
		})
	}
}

func TestHostPolicyGlobMatchesOneLabel(t *testing.T) {
	p, err := NewHostPolicy([]string{"team-*.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"team-a.example.com":   true,
		"team-.example.com":    true,
		"team-a.b.example.com": false,
		"xteam-a.example.com":  false,
	} {
		if got := p.MatchHost(host); got != want {
			t.Errorf("MatchHost(%q) = %v, want %v", host, got, want)
		}
	}
	if got := p.Globs(); len(got) != 1 || got[0] != "team-*.example.com" {
		t.Errorf("Globs = %q", got)
	}
}

// TestHostPolicy_NeverMatchesIPLiteralsOrZonesAgainstGlobs is the red-team
// finding: an IPv6 literal whose zone ends in ".atlassian.net" matched
// "*.atlassian.net", was stored as a tenant baseUrl, and the worker dialled
// the address (127.0.0.1, 169.254.169.254, fe80::1). IP literals, zoned or
// not, only ever match an exact entry; hosts with a zone or a trailing dot
// only an exact entry naming them.
func TestHostPolicy_NeverMatchesIPLiteralsOrZonesAgainstGlobs(t *testing.T) {
	globs := []string{"*.atlassian.net", "*.jira.com", "*.0.0.1", "*.254.169.254", "127.0.0.1", "::1", "exact.example.com."}
	p, err := NewHostPolicy(globs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		raw   string
		allow bool
	}{
		{"zoned v4-mapped loopback ending in a glob's domain", "https://[::ffff:7f00:1%25.atlassian.net]:8443", false},
		{"zoned IPv6 loopback", "https://[::1%25.atlassian.net]:8443", false},
		{"zoned link-local metadata address", "https://[::ffff:a9fe:a9fe%25.atlassian.net]", false},
		{"zoned link-local address", "https://[fe80::1%25.jira.com]", false},
		{"zoned loopback with an exact IP entry", "http://[::1%25lo]:8080", false},
		{"IPv4 literal matching a star glob", "https://127.0.0.1:8443", true}, // exact entry 127.0.0.1
		{"IPv4 metadata literal matching a star glob", "https://169.254.169.254", false},
		{"IPv6 literal that is not an exact entry", "https://[::ffff:7f00:1]:8443", false},
		{"exact IPv6 entry", "http://[::1]:8080", true},
		{"trailing dot host against a glob", "https://example.atlassian.net.", false},
		{"trailing dot host named by an exact entry", "https://exact.example.com.", true},
		{"userinfo before a zoned host", "https://u@[::1%25.atlassian.net]", false},
		{"ordinary product host still allowed", "https://example.atlassian.net", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := p.CheckBaseURL(tc.raw)
			if tc.allow {
				if err != nil || u == nil {
					t.Fatalf("CheckBaseURL(%q) = %v, %v; want allowed", tc.raw, u, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckBaseURL(%q) allowed it", tc.raw)
			}
			assertIs(t, err, ErrProductHostNotAllowed)
		})
	}
	for host, want := range map[string]bool{
		"::ffff:7f00:1%.atlassian.net": false,
		"127.0.0.1":                    true,
		"10.0.0.1":                     false, // "*.0.0.1" names hosts, not addresses
		"169.254.169.254":              false,
		"::ffff:127.0.0.1":             false, // the same address spelled otherwise is not the exact entry's text
		"exact.example.com.":           true,
		"a.atlassian.net.":             false,
	} {
		if got := p.MatchHost(host); got != want {
			t.Errorf("MatchHost(%q) = %v, want %v", host, got, want)
		}
	}
}
