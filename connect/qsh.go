package connect

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// ContextQSH is the fixed qsh value of context JWTs (AP.context.getToken).
// Such a token proves who the user is but not which request it was made
// for, so it is accepted only where the policy is QSHComputedOrContext.
const ContextQSH = "context-qsh"

// jwtParam is the query parameter that carries a token; it is never part of
// the canonical query, because the token cannot hash itself.
const jwtParam = "jwt"

// CanonicalRequest returns the canonical form of a request that the qsh claim
// hashes (docs/protocol.md#query-string-hash): METHOD "&" CANONICAL_URI "&" CANONICAL_QUERY.
//
// basePath is the path of the app base URL (inbound) or of the product base
// URL (outbound, e.g. Confluence "/wiki"); it is removed from the request's
// raw path when it is a prefix, with the plain prefix match of atlassian-jwt,
// because the product hashes the path relative to the base URL it knows.
//
// The path is the raw, as-received one (u.EscapedPath()); only "&" is escaped
// and one trailing "/" dropped. The query is decoded as
// application/x-www-form-urlencoded exactly as atlassian-jwt (Node's
// querystring) does: "+" is a space, invalid escapes stay literal, invalid
// UTF-8 becomes U+FFFD; the jwt parameter is dropped; names and each name's
// values are sorted in UTF-16 code unit order (what both JavaScript's and
// Java's string comparison do; for all but supplementary-plane characters it
// is code point order); names and values are re-encoded with RFC 3986
// unreserved characters only, and repeated values joined with a literal ",".
//
// Deliberate difference from atlassian-jwt 2.0.3: a parameter named
// "__proto__" is kept (atlassian-jwt drops it as a JavaScript artefact; the
// Java products do not).
func CanonicalRequest(method string, u *url.URL, basePath string) string {
	var b strings.Builder
	b.Grow(len(method) + len(u.Path) + len(u.RawQuery) + 16)
	appendCanonicalRequest(&b, method, u, basePath)
	return b.String()
}

// QSH returns the query string hash of a request: the lowercase hex SHA-256 of
// CanonicalRequest(method, u, basePath). It is what the qsh claim must hold.
func QSH(method string, u *url.URL, basePath string) string {
	return qshOf(CanonicalRequest(method, u, basePath))
}

// qshOf hashes a canonical request.
func qshOf(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return hex.EncodeToString(sum[:])
}

func appendCanonicalRequest(b *strings.Builder, method string, u *url.URL, basePath string) {
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('&')
	b.WriteString(canonicalURI(u.EscapedPath(), basePath))
	b.WriteByte('&')
	appendCanonicalQuery(b, u.RawQuery)
}

// canonicalURI follows atlassian-jwt's canonicalizeUri step by step, so that
// edge cases ("//", a base path without a trailing slash) hash the same.
func canonicalURI(path, basePath string) string {
	path = strings.TrimPrefix(path, basePath)
	if path == "" {
		return "/"
	}
	path = strings.ReplaceAll(path, "&", "%26")
	if path[0] != '/' {
		path = "/" + path
	}
	if len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	return path
}

type queryParam struct {
	name   string
	values []string
}

// appendCanonicalQuery writes the canonical query of rawQuery.
func appendCanonicalQuery(b *strings.Builder, rawQuery string) {
	if rawQuery == "" {
		return
	}
	params := parseQuery(rawQuery)
	slices.SortFunc(params, func(x, y queryParam) int { return compareUTF16(x.name, y.name) })
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		writeRFC3986(b, p.name)
		b.WriteByte('=')
		if len(p.values) > 1 {
			slices.SortFunc(p.values, compareUTF16)
		}
		for j, v := range p.values {
			if j > 0 {
				b.WriteByte(',')
			}
			writeRFC3986(b, v)
		}
	}
}

// parseQuery decodes a raw query like Node's querystring.parse: pairs split on
// "&" only (";" is data), empty pairs skipped, the name ends at the first "=",
// and repeated names collect their values in order. The jwt parameter is
// dropped. Unlike url.ParseQuery it never drops a pair, so that no part of the
// query escapes the hash.
func parseQuery(rawQuery string) []queryParam {
	params := make([]queryParam, 0, min(strings.Count(rawQuery, "&")+1, 64))
	var index map[string]int
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name := decodeQueryComponent(rawName)
		if name == jwtParam {
			continue
		}
		value := decodeQueryComponent(rawValue)
		i := -1
		if index != nil {
			if j, ok := index[name]; ok {
				i = j
			}
		} else {
			for j := range params {
				if params[j].name == name {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			params[i].values = append(params[i].values, value)
			continue
		}
		params = append(params, queryParam{name: name, values: []string{value}})
		switch {
		case index != nil:
			index[name] = len(params) - 1
		case len(params) > linearScanLimit:
			// Many parameters: a map keeps grouping linear, so a long
			// query cannot make canonicalisation quadratic.
			index = make(map[string]int, 2*len(params))
			for j := range params {
				index[params[j].name] = j
			}
		}
	}
	return params
}

// linearScanLimit is how many distinct parameters parseQuery groups by
// scanning before it builds a map; real Connect queries have a handful.
const linearScanLimit = 16

// decodeQueryComponent decodes one form-urlencoded name or value leniently:
// "+" is a space, "%XX" with two hex digits is a byte, any other "%" stays
// literal, and bytes that are not valid UTF-8 are replaced like a WHATWG
// decoder (Node's Buffer.toString) does, so that the result is the string the
// product's and atlassian-jwt's canonicaliser see.
func decodeQueryComponent(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		if utf8.ValidString(s) {
			return s
		}
		return whatwgUTF8([]byte(s))
	}
	buf := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			buf = append(buf, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			buf = append(buf, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			buf = append(buf, c)
		}
	}
	if utf8.Valid(buf) {
		return string(buf)
	}
	return whatwgUTF8(buf)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// whatwgUTF8 decodes b with the WHATWG UTF-8 decoder's error handling: each
// maximal invalid subsequence becomes one U+FFFD. Go's own decoding replaces
// byte by byte, which differs for truncated sequences ("\xe2\x82A").
func whatwgUTF8(b []byte) string {
	var out strings.Builder
	out.Grow(len(b) + 8)
	var (
		cp           rune
		needed, seen int
		lower, upper byte = 0x80, 0xBF
	)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if needed == 0 {
			switch {
			case c <= 0x7F:
				out.WriteByte(c)
			case 0xC2 <= c && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case 0xE0 <= c && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				} else if c == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(c&0x0F)
			case 0xF0 <= c && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				} else if c == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(c&0x07)
			default:
				out.WriteRune(utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			// The sequence so far is one error; c starts afresh.
			cp, needed, seen, lower, upper = 0, 0, 0, 0x80, 0xBF
			out.WriteRune(utf8.RuneError)
			i--
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		seen++
		if seen == needed {
			out.WriteRune(cp)
			cp, needed, seen = 0, 0, 0
		}
	}
	if needed != 0 {
		out.WriteRune(utf8.RuneError)
	}
	return out.String()
}

// compareUTF16 orders valid UTF-8 strings as their UTF-16 encodings compare
// code unit by code unit (JavaScript's default sort, Java's compareTo). Byte
// order of UTF-8 is code point order; the two differ only when one string has
// a supplementary-plane character (surrogates D800-DFFF) where the other has a
// BMP character at or above U+E000.
func compareUTF16(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return len(a) - len(b)
	}
	// Back up to the start of the rune that differs.
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRuneInString(a[i:])
	rb, _ := utf8.DecodeRuneInString(b[i:])
	ka, kb := utf16Key(ra), utf16Key(rb)
	switch {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	// Same leading code unit class (only possible for invalid bytes):
	// fall back to byte order, which is total.
	return strings.Compare(a[i:], b[i:])
}

// utf16Key maps a rune to a value that sorts like its first UTF-16 code unit,
// with supplementary characters ordered among themselves by code point.
func utf16Key(r rune) int64 {
	switch {
	case r < 0xD800:
		return int64(r)
	case r >= 0x10000:
		// Between the BMP below the surrogates and the BMP above them.
		return 0xD800 + int64(r-0x10000)
	default:
		// U+E000..U+FFFF sort after every surrogate pair.
		return 0xD800 + 0x100000 + int64(r)
	}
}

// writeRFC3986 percent-encodes s leaving only the RFC 3986 unreserved
// characters (A-Z a-z 0-9 - . _ ~), with upper-case hex, as the qsh
// specification and atlassian-jwt's encodeRfc3986 do.
func writeRFC3986(b *strings.Builder, s string) {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0F])
	}
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// basePathOf returns the raw path of a base URL, the part that
// CanonicalRequest strips from request paths.
func basePathOf(u *url.URL) string {
	return u.EscapedPath()
}
