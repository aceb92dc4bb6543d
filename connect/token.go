package connect

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/internal/jsonobj"
)

// MaxTokenLength bounds the tokens the package looks at. Real Connect tokens
// are well under 2 KiB; anything longer is refused as malformed before it is
// decoded, so that a huge header cannot cost more than a length check.
const MaxTokenLength = 8 << 10

// DefaultLeeway is the clock skew tolerated on exp and nbf when a config
// leaves Leeway zero: docs/protocol.md#shared-secret-requests recommends at most 30–60 s.
const DefaultLeeway = 30 * time.Second

// Claims are the verified claims of a Connect JWT, returned only after every
// check passed.
type Claims struct {
	// Issuer is iss: the tenant clientKey for product-issued tokens.
	Issuer string
	// Subject is sub: the acting user's Atlassian accountId, often empty.
	Subject string
	// Audience is aud, normalised to a list (signed installs: the app base URL).
	Audience []string
	// IssuedAt is iat; always set, since iat is required.
	IssuedAt time.Time
	// ExpiresAt is exp; always set, since exp is required.
	ExpiresAt time.Time
	// QSH is the qsh claim: a computed hash or ContextQSH.
	QSH string
	// Context is the raw context claim (user, license...); nil when absent.
	Context json.RawMessage
	// KeyID is the kid of the header; set for RS256 (signed install) only.
	KeyID string
}

// ExtractToken returns the Connect JWT of a request, from the jwt query
// parameter (iframe loads) or else from an "Authorization: JWT <token>"
// header. The query wins when both are present, as in atlassian-connect-
// express. It returns ErrMissingToken when there is none and
// ErrMalformedToken when the query holds several or the token is longer than
// MaxTokenLength.
func ExtractToken(r *http.Request) (string, error) {
	var tok string
	if r.URL != nil && r.URL.RawQuery != "" {
		t, n := queryToken(r.URL.RawQuery)
		if n > 1 {
			return "", fmt.Errorf("%w: %d jwt query parameters", ErrMalformedToken, n)
		}
		tok = t
	}
	if tok == "" {
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
			if strings.EqualFold(scheme, "JWT") {
				tok = strings.TrimSpace(rest)
			}
		}
	}
	if tok == "" {
		return "", fmt.Errorf("%w: no jwt query parameter and no \"Authorization: JWT\" header", ErrMissingToken)
	}
	if len(tok) > MaxTokenLength {
		return "", fmt.Errorf("%w: token is %d bytes, more than %d", ErrMalformedToken, len(tok), MaxTokenLength)
	}
	return tok, nil
}

// queryToken finds the jwt parameter of a raw query, decoding names the same
// way the canonical query does, so that the parameter the hash ignores is the
// one the token is read from. It returns the last value and how many there were.
func queryToken(rawQuery string) (string, int) {
	if !strings.Contains(rawQuery, "jwt") && !strings.ContainsAny(rawQuery, "%+") {
		return "", 0
	}
	var (
		tok string
		n   int
	)
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		rawName, rawValue, _ := strings.Cut(pair, "=")
		if pair == "" || decodeQueryComponent(rawName) != jwtParam {
			continue
		}
		n++
		tok = decodeQueryComponent(rawValue)
	}
	return tok, n
}

// tokenHeader is the part of a JOSE header the package reads itself, before
// any library sees the token, so that the algorithm is checked against what
// the endpoint requires instead of being taken from the token.
type tokenHeader struct {
	Alg, Kid, Typ string
	Crit          json.RawMessage
	// stringsOnly reports that every member of the header is a JSON string,
	// so that golang-jwt's decoding of it (into map[string]any) cannot fail
	// where this one succeeded, and a verifier may skip that second decoding.
	stringsOnly bool
}

// parseHeader checks the compact serialisation of raw (three base64url
// segments) and decodes its header.
func parseHeader(raw string) (tokenHeader, error) {
	var h tokenHeader
	if len(raw) > MaxTokenLength {
		return h, fmt.Errorf("%w: token is %d bytes, more than %d", ErrMalformedToken, len(raw), MaxTokenLength)
	}
	if strings.Count(raw, ".") != 2 {
		return h, fmt.Errorf("%w: want 3 dot-separated segments", ErrMalformedToken)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; !isBase64URL(c) && c != '.' {
			return h, fmt.Errorf("%w: byte %d of the token is not base64url", ErrMalformedToken, i)
		}
	}
	headerSeg, _, _ := strings.Cut(raw, ".")
	if headerSeg == "" {
		return h, fmt.Errorf("%w: empty header", ErrMalformedToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(headerSeg)
	if err != nil {
		return h, fmt.Errorf("%w: header is not base64url", ErrMalformedToken)
	}
	// Read exact member names, as golang-jwt does (its header is a map):
	// encoding/json's case-insensitive struct matching would let
	// {"alg":"none","ALG":"HS256"} mean one thing here and another there.
	members, err := jsonobj.Members(b)
	if err != nil {
		return h, fmt.Errorf("%w: header is not a JSON object: %v", ErrMalformedToken, err)
	}
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"alg", &h.Alg}, {"kid", &h.Kid}, {"typ", &h.Typ}} {
		v, ok := members[f.name]
		if !ok {
			continue
		}
		s, ok := jsonobj.String(v)
		if !ok {
			return h, fmt.Errorf("%w: header %s is not a string", ErrMalformedToken, f.name)
		}
		*f.dst = s
	}
	h.Crit = members["crit"]
	if len(h.Crit) > 0 {
		// RFC 7515 §4.1.11: a recipient must refuse critical extensions it
		// does not understand, and this package understands none.
		return h, fmt.Errorf("%w: header has crit extensions", ErrMalformedToken)
	}
	h.stringsOnly = members != nil
	for _, v := range members {
		if len(v) == 0 || v[0] != '"' {
			h.stringsOnly = false
			break
		}
	}
	return h, nil
}

// extractWithAlg extracts the request's token and decodes its header, which must
// name alg (ErrBadAlgorithm otherwise; want says what the endpoint wants).
func extractWithAlg(r *http.Request, alg, want string) (string, tokenHeader, error) {
	raw, err := ExtractToken(r)
	if err != nil {
		return "", tokenHeader{}, err
	}
	hdr, err := parseHeader(raw)
	if err != nil {
		return "", tokenHeader{}, err
	}
	if hdr.Alg != alg {
		return "", tokenHeader{}, fmt.Errorf("%w: header alg %q, want %s", ErrBadAlgorithm, truncate(hdr.Alg, 32), want)
	}
	return raw, hdr, nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// jwtClaims is what golang-jwt decodes the payload into, through
// UnmarshalJSON (strict), never through encoding/json's struct matching.
type jwtClaims struct {
	jwt.RegisteredClaims
	QSH     string          `json:"qsh"`
	Context json.RawMessage `json:"context"`
}

// maxNumericDate is 9999-12-31T23:59:59Z: a NumericDate beyond it (9e18, say)
// is no date any product would send, and is refused rather than read as
// "never expires".
const maxNumericDate = 253402300799

// UnmarshalJSON decodes a claims set strictly, so that the claims verified
// are the claims any other JWT library would read: the payload is one JSON
// object whose member names are matched exactly (encoding/json would read
// {"iss":A,"ISS":B} as B) and appear once each; iss, sub, jti and qsh are
// strings; aud is a string or an array of strings; exp, nbf and iat are JSON
// numbers (not strings) between 0 and year 9999. Other members are ignored.
// Presence is checked later (checkTimes, the verifiers), so that a missing
// claim is ErrMissingClaim rather than a malformed token.
func (c *jwtClaims) UnmarshalJSON(b []byte) error {
	members, err := decodeMembers(b)
	if err != nil {
		return err
	}
	*c = jwtClaims{}
	for name, raw := range members {
		switch name {
		case "iss":
			err = claimString(name, raw, &c.Issuer)
		case "sub":
			err = claimString(name, raw, &c.Subject)
		case "jti":
			err = claimString(name, raw, &c.ID)
		case "qsh":
			err = claimString(name, raw, &c.QSH)
		case "aud":
			c.Audience, err = claimAudience(raw)
		case "exp":
			c.ExpiresAt, err = claimDate(name, raw)
		case "nbf":
			c.NotBefore, err = claimDate(name, raw)
		case "iat":
			c.IssuedAt, err = claimDate(name, raw)
		case "context":
			c.Context = append(json.RawMessage(nil), raw...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// decodeMembers decodes a JSON object into its members, refusing anything
// else, a member name given twice, and trailing data.
func decodeMembers(b []byte) (map[string]json.RawMessage, error) {
	if json.Valid(b) {
		// Only the errors that valid JSON can have, as the decoder below
		// words them.
		members, err := jsonobj.Unique(b)
		var dup *jsonobj.DuplicateError
		switch {
		case errors.As(err, &dup):
			return nil, fmt.Errorf("claim %s appears more than once", truncate(dup.Name, 32))
		case err != nil:
			return nil, errors.New("claims are not a JSON object")
		}
		return members, nil
	}
	return decodeMembersStream(b)
}

// decodeMembersStream is decodeMembers with a json.Decoder, for any input.
func decodeMembersStream(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("claims are not a JSON object")
	}
	members := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errors.New("claims: member name is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("claim %s: %w", truncate(name, 32), err)
		}
		if _, dup := members[name]; dup {
			return nil, fmt.Errorf("claim %s appears more than once", truncate(name, 32))
		}
		members[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("claims: data after the JSON object")
	}
	return members, nil
}

func claimString(name string, raw json.RawMessage, dst *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return fmt.Errorf("claim %s is not a string", name)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("claim %s: %w", name, err)
	}
	return nil
}

// claimAudience reads aud: one string, or an array of strings.
func claimAudience(raw json.RawMessage) (jwt.ClaimStrings, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var one string
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, fmt.Errorf("claim aud: %w", err)
		}
		return jwt.ClaimStrings{one}, nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, errors.New("claim aud is neither a string nor an array of strings")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("claim aud: %w", err)
	}
	out := make(jwt.ClaimStrings, len(items))
	for i, it := range items {
		if err := claimString("aud", it, &out[i]); err != nil {
			return nil, fmt.Errorf("claim aud[%d] is not a string", i)
		}
	}
	return out, nil
}

// claimDate reads a NumericDate (RFC 7519 §2): a JSON number of seconds since
// the epoch, possibly fractional, here between 0 and maxNumericDate.
func claimDate(name string, raw json.RawMessage) (*jwt.NumericDate, error) {
	if len(raw) == 0 || !(raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9') {
		return nil, fmt.Errorf("claim %s is not a JSON number", name)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > maxNumericDate {
		return nil, fmt.Errorf("claim %s %s is not a date between 1970 and 9999", name, truncate(string(raw), 32))
	}
	sec, frac := math.Modf(v)
	return &jwt.NumericDate{Time: time.Unix(int64(sec), int64(frac*1e9))}, nil
}

// newParser returns a golang-jwt parser pinned to one algorithm. Claims are
// validated by this package (not by the library) so that the order of checks
// and the error of each follow docs/protocol.md#signed-installs and #shared-secret-requests.
func newParser(alg string) *jwt.Parser {
	return jwt.NewParser(jwt.WithValidMethods([]string{alg}), jwt.WithoutClaimsValidation())
}

// mapJWTError turns a golang-jwt parse error into the package's sentinels.
func mapJWTError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: %v", ErrMalformedToken, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: %v", ErrBadAlgorithm, err)
	default:
		return fmt.Errorf("%w: %v", ErrMalformedToken, err)
	}
}

// checkTimes requires exp and iat and applies the leeway to exp and nbf. The
// value of iat is not compared with now (atlassian-connect-express does not
// either), so a product clock slightly ahead of ours does not break installs;
// it orders lifecycle events, so a token without one is refused.
func checkTimes(c *jwtClaims, now time.Time, leeway time.Duration) error {
	if c.ExpiresAt == nil {
		return fmt.Errorf("%w: exp", ErrMissingClaim)
	}
	if c.IssuedAt == nil {
		return fmt.Errorf("%w: iat", ErrMissingClaim)
	}
	if exp := c.ExpiresAt.Time; !now.Before(exp.Add(leeway)) {
		return fmt.Errorf("%w: exp %s is before now %s minus leeway %s",
			ErrExpired, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
	}
	if c.NotBefore != nil {
		if nbf := c.NotBefore.Time; now.Add(leeway).Before(nbf) {
			return fmt.Errorf("%w: nbf %s is after now %s plus leeway %s",
				ErrExpired, nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
		}
	}
	return nil
}

// toClaims copies verified claims into the exported shape.
func toClaims(c *jwtClaims, kid string) *Claims {
	out := &Claims{
		Issuer:   c.Issuer,
		Subject:  c.Subject,
		Audience: []string(c.Audience),
		QSH:      c.QSH,
		KeyID:    kid,
	}
	if c.IssuedAt != nil {
		out.IssuedAt = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		out.ExpiresAt = c.ExpiresAt.Time
	}
	if len(c.Context) > 0 && string(c.Context) != "null" {
		out.Context = c.Context
	}
	return out
}

// qshMatches checks the qsh claim against the request, relative to each
// allowed base path. contextOK says whether ContextQSH is acceptable here.
func qshMatches(claim string, r *http.Request, basePaths []string, contextOK bool) error {
	switch claim {
	case "":
		return fmt.Errorf("%w: qsh", ErrMissingClaim)
	case ContextQSH:
		if contextOK {
			return nil
		}
		return fmt.Errorf("%w: a context token (qsh %q) is not accepted on this endpoint", ErrQSHMismatch, ContextQSH)
	}
	var canonical string
	for _, bp := range basePaths {
		canonical = CanonicalRequest(r.Method, r.URL, bp)
		if qshOf(canonical) == claim {
			return nil
		}
	}
	return fmt.Errorf("%w: canonical request %q", ErrQSHMismatch, truncate(canonical, 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
