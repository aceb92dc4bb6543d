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
