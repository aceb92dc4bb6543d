package connect

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCanonicalRequest checks that canonicalisation never panics, is
// deterministic, and always has the shape METHOD&URI&QUERY: a URI that starts
// with '/', has no '&' and has lost one trailing '/', and a query of sorted, fully
// RFC 3986-encoded parameters without jwt. Seeds are the vectors of docs/protocol.md#query-string-hash
// (testdata/fuzz holds more).
func FuzzCanonicalRequest(f *testing.F) {
	for _, v := range append(append([]qshVector(nil), publishedVectors...), localVectors...) {
		f.Add(v.method, v.url, v.basePath)
	}
	f.Add("post", "https://a.example/a&b//?%zz=%E2%82A&=&&+=+&jwt=x", "/a")
	f.Add("GET", "https://a.example/p?a=%EF%BC%81&a=%F0%9F%98%80&a=%ED%A0%80", "")
	f.Fuzz(func(t *testing.T, method, rawURL, basePath string) {
		if !validMethod(method) {
			t.Skip() // net/http only ever hands us token methods
		}
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Skip()
		}
		got := CanonicalRequest(method, u, basePath)
		if again := CanonicalRequest(method, u, basePath); again != got {
			t.Fatalf("not deterministic: %q then %q", got, again)
		}
		if h := QSH(method, u, basePath); h != qshOf(got) || len(h) != 64 {
			t.Fatalf("QSH %q is not the hash of %q", h, got)
		}
		m, rest, ok := strings.Cut(got, "&")
		if !ok || m != strings.ToUpper(method) {
			t.Fatalf("method part of %q is not %q", got, strings.ToUpper(method))
		}
		uri, query, ok := strings.Cut(rest, "&")
		if !ok {
			t.Fatalf("%q has fewer than two '&'", got)
		}
		if !strings.HasPrefix(uri, "/") || strings.Contains(uri, "&") {
			t.Fatalf("URI part %q of %q", uri, got)
		}
		// Only one trailing '/' is dropped, so one may remain after "//".
		if len(uri) > 1 && strings.HasSuffix(uri, "/") && !strings.HasSuffix(u.EscapedPath(), "//") {
			t.Fatalf("URI part %q of %q keeps a trailing '/'", uri, got)
		}
		if query == "" {
			return
		}
		var prev string
		for i, param := range strings.Split(query, "&") {
			name, values, ok := strings.Cut(param, "=")
			if !ok {
				t.Fatalf("param %q of %q has no '='", param, got)
			}
			if !isEncoded(name) {
				t.Fatalf("name %q is not RFC 3986 encoded", name)
			}
			for _, v := range strings.Split(values, ",") {
				if !isEncoded(v) {
					t.Fatalf("value %q is not RFC 3986 encoded", v)
				}
			}
			decoded, err := url.PathUnescape(name)
			if err != nil || !utf8.ValidString(decoded) {
				t.Fatalf("name %q does not decode to UTF-8", name)
			}
			if decoded == "jwt" {
				t.Fatalf("jwt parameter kept in %q", got)
			}
			if i > 0 && compareUTF16(prev, decoded) >= 0 {
				t.Fatalf("names not strictly sorted: %q then %q", prev, decoded)
			}
			prev = decoded
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// isEncoded reports whether s uses only unreserved characters and %XX with
// upper-case hex.
func isEncoded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isUnreserved(c):
		case c == '%' && i+2 < len(s) && isUpperHex(s[i+1]) && isUpperHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// FuzzVerifyToken feeds arbitrary tokens to both verifiers: they must never
// panic, and must refuse everything with one of the package's sentinels
// unless the token is a genuine one.
func FuzzVerifyToken(f *testing.F) {
	k, _ := testKeys(f)
	f.Add(vecSimpleToken)
	f.Add(signHS256(f, hsClaims(f, "POST", appBase+"/enabled", ""), []byte(tenantSecret)))
	f.Add(signRS256(f, installClaims(f, installTarget, ""), k, testKid))
	f.Add(rawToken(`{"alg":"none"}`, map[string]any{"iss": tenantKey}, nil))
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("a.b.c")
	f.Add(strings.Repeat("A", 9000))

	hs := newHSVerifier(f, staticSecrets(tenantKey, []byte(tenantSecret)))
	inst := newInstallVerifier(f, staticKeys{testKid: &k.PublicKey})
	sentinels := []error{ErrMissingToken, ErrMalformedToken, ErrBadAlgorithm, ErrMissingClaim, ErrBadSignature,
		ErrExpired, ErrQSHMismatch, ErrUnknownIssuer, ErrBadAudience, ErrIssuerMismatch, ErrBadKeyID,
		ErrUnknownKey, ErrKeyUnavailable, ErrKeyFetchLimited, ErrSecretUnavailable, ErrProductHostNotAllowed}
	typed := func(err error) bool {
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, tok string) {
		for _, target := range []string{appBase + "/enabled", installTarget} {
			r, err := http.NewRequestWithContext(t.Context(), "POST", target, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", "JWT "+tok)
			if c, err := hs.Verify(t.Context(), r, QSHComputedOrContext); err != nil && !typed(err) {
				t.Fatalf("HS256 untyped error: %v", err)
			} else if err == nil && (c == nil || c.Issuer != tenantKey || c.ExpiresAt.IsZero()) {
				t.Fatalf("HS256 accepted %q with claims %+v", tok, c)
			}
			if c, err := inst.Verify(t.Context(), r, installClientKey, installProduct); err != nil && !typed(err) {
				t.Fatalf("install untyped error: %v", err)
			} else if err == nil && (c == nil || c.Issuer != installClientKey || c.KeyID != testKid) {
				t.Fatalf("install accepted %q with claims %+v", tok, c)
			}
		}
	})
}

// FuzzParsePublicKeyPEM: no panic, and anything accepted is a big RSA key.
func FuzzParsePublicKeyPEM(f *testing.F) {
	k, _ := testKeys(f)
	p := publicPEM(f, &k.PublicKey)
	f.Add(p)
	f.Add([]byte(strings.ReplaceAll(string(p), "\n", "\r\n")))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----AAAA-----END PUBLIC KEY-----"))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := ParsePublicKeyPEM(b)
		if err == nil && (key == nil || key.N.BitLen() < MinRSAKeyBits) {
			t.Fatalf("accepted %v", key)
		}
	})
}

// FuzzDecodeQueryComponent: decoding always yields valid UTF-8 and leaves
// plain valid text alone.
func FuzzDecodeQueryComponent(f *testing.F) {
	for _, s := range []string{"a+b", "%E2%82A", "%ED%A0%80", "%zz", "%", "\xff", "plain", "%F0%9F%98%80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := decodeQueryComponent(s)
		if !utf8.ValidString(got) {
			t.Fatalf("decodeQueryComponent(%q) = %q is not UTF-8", s, got)
		}
		if utf8.ValidString(s) && !strings.ContainsAny(s, "%+") && got != s {
			t.Fatalf("plain %q changed to %q", s, got)
		}
	})
}
