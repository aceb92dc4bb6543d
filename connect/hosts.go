package connect

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
)

// HostPolicy decides which product base URLs the app trusts: the hosts a
// signed install may come from (and whose install keys are fetched), and the
// hosts outbound calls may be signed for. It is immutable and safe for
// concurrent use.
type HostPolicy struct {
	globs    []string
	patterns []*regexp.Regexp
	// exact are the entries without '*': the only ones an IP literal, a
	// zoned host or a host with a trailing dot can match.
	exact map[string]bool
}

// NewHostPolicy compiles CONNECT_PRODUCT_HOSTS globs such as "*.atlassian.net".
// A '*' matches within one DNS label ([^.]*), as in atlassian-connect-express's
// whitelist, and matching is case-insensitive. Globs name hosts only (no
// scheme, port or path); at least one is required, so that an empty setting
// fails closed instead of trusting every host.
//
// Globs match host names only. An IP literal (zoned or not), a host with a
// zone ('%') or a host with a trailing dot matches only an entry without '*'
// that spells it exactly: "*.atlassian.net" never matches
// "::ffff:7f00:1%.atlassian.net", whose zone the glob would otherwise see.
func NewHostPolicy(globs []string) (*HostPolicy, error) {
	p := &HostPolicy{exact: make(map[string]bool)}
	for _, g := range globs {
		g = strings.ToLower(strings.TrimSpace(g))
		if g == "" {
			continue
		}
		if err := checkGlob(g); err != nil {
			return nil, err
		}
		parts := strings.Split(g, "*")
		for i, part := range parts {
			parts[i] = regexp.QuoteMeta(part)
		}
		re, err := regexp.Compile(`^` + strings.Join(parts, `[^.]*`) + `$`)
		if err != nil {
			return nil, fmt.Errorf("connect: product host glob %q: %w", g, err)
		}
		p.globs = append(p.globs, g)
		p.patterns = append(p.patterns, re)
		if !strings.Contains(g, "*") {
			p.exact[g] = true
		}
	}
	if len(p.patterns) == 0 {
		return nil, errors.New("connect: at least one product host glob is required")
	}
	return p, nil
}

// checkGlob refuses globs that are not host patterns, so that a mistyped
// setting such as "https://*.atlassian.net" fails at start-up rather than
// matching nothing at install time.
func checkGlob(g string) error {
	for i := 0; i < len(g); i++ {
		c := g[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '*' || c == ':') {
			return fmt.Errorf("connect: product host glob %q: only host names, '*' and IP literals are allowed", g)
		}
	}
	// A trailing dot (a fully qualified name) is allowed in an exact entry
	// only: it is then the one way to trust such a host.
	exactFQDN := !strings.Contains(g, "*") && len(g) > 1 && strings.HasSuffix(g, ".")
	if strings.HasPrefix(g, ".") || (strings.HasSuffix(g, ".") && !exactFQDN) || strings.Contains(g, "..") {
		return fmt.Errorf("connect: product host glob %q: empty DNS label", g)
	}
	return nil
}

// Globs returns the normalised globs, for logs and diagnostics.
func (p *HostPolicy) Globs() []string {
	return append([]string(nil), p.globs...)
}

// MatchHost reports whether a bare host (no port, no brackets) matches an
// entry. An IP literal, a host with a zone ('%') or with a trailing dot
// matches only an entry without '*' equal to it; any other host matches a
// glob as described at NewHostPolicy.
func (p *HostPolicy) MatchHost(host string) bool {
	host = strings.ToLower(host)
	if exactOnly(host) {
		return p.exact[host]
	}
	for _, re := range p.patterns {
		if re.MatchString(host) {
			return true
		}
	}
	return false
}

// CheckBaseURL parses a product baseUrl and checks that the app may trust it:
// absolute, host matching an entry (MatchHost: an IP literal, a zoned host or
// one with a trailing dot only ever matches an exact entry, never a glob),
// scheme https (http only for the loopback hosts 127.0.0.1, ::1 and
// localhost, so that tests and local development can play the product), no
// userinfo, no query or fragment. Every caller that trusts or dials a product
// base URL (signed installs, key fetches, outbound calls) goes through it. The
// error wraps ErrProductHostNotAllowed.
func (p *HostPolicy) CheckBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty baseUrl", ErrProductHostNotAllowed)
	}
	if len(raw) > 2048 {
		return nil, fmt.Errorf("%w: baseUrl is %d bytes long", ErrProductHostNotAllowed, len(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: baseUrl does not parse: %v", ErrProductHostNotAllowed, err)
	}
	host := u.Hostname()
	switch {
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("%w: baseUrl %q is not an absolute URL", ErrProductHostNotAllowed, truncate(raw, 256))
	case u.User != nil:
		return nil, fmt.Errorf("%w: baseUrl has userinfo", ErrProductHostNotAllowed)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("%w: baseUrl %q has a query or fragment", ErrProductHostNotAllowed, truncate(raw, 256))
	case host == "":
		return nil, fmt.Errorf("%w: baseUrl %q has no host", ErrProductHostNotAllowed, truncate(raw, 256))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopbackHost(host) {
			return nil, fmt.Errorf("%w: baseUrl %q is http; only loopback hosts may use http", ErrProductHostNotAllowed, truncate(raw, 256))
		}
	default:
		return nil, fmt.Errorf("%w: baseUrl scheme %q is not https", ErrProductHostNotAllowed, truncate(u.Scheme, 16))
	}
	if !p.MatchHost(host) {
		if exactOnly(host) {
			return nil, fmt.Errorf("%w: host %q is an IP literal, zoned or fully qualified, and no exact entry of %q names it",
				ErrProductHostNotAllowed, truncate(host, 256), p.globs)
		}
		return nil, fmt.Errorf("%w: host %q matches none of %q", ErrProductHostNotAllowed, truncate(host, 256), p.globs)
	}
	return u, nil
}

// exactOnly reports whether host may only match an exact entry: an IP
// literal (a glob names DNS labels, and "*.0.0.1" must not admit 10.0.0.1),
// anything with a zone or other '%', and a fully qualified name with a
// trailing dot.
func exactOnly(host string) bool {
	if strings.ContainsRune(host, '%') || strings.HasSuffix(host, ".") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// isLoopbackHost reports whether host names this machine, the only hosts a
// product may be reached on without TLS.
func isLoopbackHost(host string) bool {
	switch strings.ToLower(host) {
	case "127.0.0.1", "::1", "localhost":
		return true
	}
	return false
}
