package connect

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	tenantKey    = "5b4f6a1e-tenant"
	tenantSecret = "shared-secret-of-the-tenant-0123456789"
	appBase      = "https://app.example.com"
)

var hsNow = time.Unix(1_750_000_000, 0)

func newHSVerifier(t testing.TB, store SecretStore, bases ...string) *HS256Verifier {
	t.Helper()
	if len(bases) == 0 {
		bases = []string{appBase}
	}
	v, err := NewHS256Verifier(HS256Config{AppBaseURLs: bases, Secrets: store, Now: fixedClock(hsNow)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// hsClaims returns product-style claims for method and target.
func hsClaims(t testing.TB, method, target, basePath string) jwt.MapClaims {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	return jwt.MapClaims{
		"iss": tenantKey,
		"sub": "557058:user",
		"iat": hsNow.Add(-10 * time.Second).Unix(),
		"exp": hsNow.Add(3 * time.Minute).Unix(),
		"qsh": QSH(method, u, basePath),
	}
}

func TestHS256VerifierAcceptsValidProductRequests(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		target   string
		bases    []string
		basePath string
		policy   QSHPolicy
		qsh      string // overrides the computed qsh when set
	}{
		{name: "enabled lifecycle", method: "POST", target: appBase + "/enabled"},
		{name: "migration event", method: "POST", target: appBase + "/migration/events"},
		{name: "webhook with query", method: "POST", target: appBase + "/webhook?issue=10001&user_id=a%20b"},
		{name: "computed qsh on a context endpoint", method: "GET", target: appBase + "/panel?lic=active", policy: QSHComputedOrContext},
		{name: "context-qsh on a context endpoint", method: "GET", target: appBase + "/api/data", policy: QSHComputedOrContext, qsh: ContextQSH},
		{name: "app base URL with a path", method: "POST", target: "https://vendor.example/connect/enabled", bases: []string{"https://vendor.example/connect"}, basePath: "/connect"},
		{name: "qsh relative to an allowed older base URL", method: "POST", target: "https://old.example/addon/enabled", bases: []string{appBase, "https://old.example/addon"}, basePath: "/addon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := hsClaims(t, tc.method, tc.target, tc.basePath)
			if tc.qsh != "" {
				claims["qsh"] = tc.qsh
			}
			tok := signHS256(t, claims, []byte(tenantSecret))
			v := newHSVerifier(t, staticSecrets(tenantKey, []byte(tenantSecret)), tc.bases...)
			got, err := v.Verify(t.Context(), newRequest(t, tc.method, tc.target, tok), tc.policy)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Issuer != tenantKey || got.Subject != "557058:user" || got.QSH != claims["qsh"] || got.KeyID != "" {
				t.Errorf("claims = %+v", got)
			}
		})
	}
}

func TestHS256VerifierRefusesAttacks(t *testing.T) {
	secret := []byte(tenantSecret)
	target := appBase + "/enabled"
	valid := func(t *testing.T) jwt.MapClaims { return hsClaims(t, "POST", target, "") }
	tests := []struct {
		name   string
		token  func(t *testing.T) string
		target string
		policy QSHPolicy
		want   error
	}{
		{"no token", func(*testing.T) string { return "" }, "", QSHComputed, ErrMissingToken},
		{"alg none", func(t *testing.T) string {
			return rawToken(`{"alg":"none","typ":"JWT"}`, valid(t), nil)
		}, "", QSHComputed, ErrBadAlgorithm},
		{"alg None in another case", func(t *testing.T) string {
			return rawToken(`{"alg":"None","typ":"JWT"}`, valid(t), nil)
		}, "", QSHComputed, ErrBadAlgorithm},
		{"alg RS256 on an HS256 endpoint", func(t *testing.T) string {
			k, _ := testKeys(t)
			return signRS256(t, valid(t), k, "kid-1")
		}, "", QSHComputed, ErrBadAlgorithm},
		{"alg HS512", func(t *testing.T) string {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, valid(t)).SignedString(secret)
			return tok
		}, "", QSHComputed, ErrBadAlgorithm},
		{"wrong secret", func(t *testing.T) string { return signHS256(t, valid(t), []byte("not-the-secret")) }, "", QSHComputed, ErrBadSignature},
		{"signature stripped", func(t *testing.T) string {
			tok := signHS256(t, valid(t), secret)
			return tok[:strings.LastIndexByte(tok, '.')+1]
		}, "", QSHComputed, ErrBadSignature},
		{"claims swapped under a valid signature", func(t *testing.T) string {
			tok := signHS256(t, valid(t), secret)
			c := valid(t)
			c["sub"] = "admin"
			other := signHS256(t, c, []byte("x"))
			p := strings.Split(tok, ".")
			return p[0] + "." + strings.Split(other, ".")[1] + "." + p[2]
		}, "", QSHComputed, ErrBadSignature},
		{"unknown issuer", func(t *testing.T) string {
			c := valid(t)
			c["iss"] = "someone-else"
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrUnknownIssuer},
		{"missing iss", func(t *testing.T) string {
			c := valid(t)
			delete(c, "iss")
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrMissingClaim},
		{"expired", func(t *testing.T) string {
			c := valid(t)
			c["exp"] = hsNow.Add(-31 * time.Second).Unix()
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrExpired},
		{"not yet valid", func(t *testing.T) string {
			c := valid(t)
			c["nbf"] = hsNow.Add(5 * time.Minute).Unix()
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrExpired},
		{"missing exp", func(t *testing.T) string {
			c := valid(t)
			delete(c, "exp")
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrMissingClaim},
		{"missing qsh", func(t *testing.T) string {
			c := valid(t)
			delete(c, "qsh")
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrMissingClaim},
		{"qsh for another path", func(t *testing.T) string {
			return signHS256(t, hsClaims(t, "POST", appBase+"/disabled", ""), secret)
		}, "", QSHComputed, ErrQSHMismatch},
		{"qsh for another method", func(t *testing.T) string {
			return signHS256(t, hsClaims(t, "GET", target, ""), secret)
		}, "", QSHComputed, ErrQSHMismatch},
		{"qsh for another query", func(t *testing.T) string {
			return signHS256(t, hsClaims(t, "POST", target+"?a=1", ""), secret)
		}, target + "?a=2", QSHComputed, ErrQSHMismatch},
		{"context-qsh on a lifecycle endpoint", func(t *testing.T) string {
			c := valid(t)
			c["qsh"] = ContextQSH
			return signHS256(t, c, secret)
		}, "", QSHComputed, ErrQSHMismatch},
		{"context-qsh under an unknown policy value", func(t *testing.T) string {
			c := valid(t)
			c["qsh"] = ContextQSH
			return signHS256(t, c, secret)
		}, "", QSHPolicy(42), ErrQSHMismatch},
		{"10 KB garbage token", func(*testing.T) string { return strings.Repeat("A", 10<<10) }, "", QSHComputed, ErrMalformedToken},
		{"two segments", func(*testing.T) string { return "eyJhbGciOiJIUzI1NiJ9.e30" }, "", QSHComputed, ErrMalformedToken},
		{"four segments", func(*testing.T) string { return "a.b.c.d" }, "", QSHComputed, ErrMalformedToken},
		{"header not JSON", func(*testing.T) string { return "bm90IGpzb24.e30.c2ln" }, "", QSHComputed, ErrMalformedToken},
		{"header not base64url", func(*testing.T) string { return "!!!.e30.c2ln" }, "", QSHComputed, ErrMalformedToken},
		{"alg none hidden behind a case-variant ALG", func(t *testing.T) string {
			return rawToken(`{"alg":"none","ALG":"HS256"}`, valid(t), hmacSign(secret))
		}, "", QSHComputed, ErrBadAlgorithm},
		{"alg is not a string", func(t *testing.T) string { return rawToken(`{"alg":1}`, valid(t), nil) }, "", QSHComputed, ErrMalformedToken},
		{"crit header", func(t *testing.T) string {
			return rawToken(`{"alg":"HS256","crit":["b64"],"b64":false}`, valid(t), hmacSign(secret))
		}, "", QSHComputed, ErrMalformedToken},
		{"claims not JSON", func(*testing.T) string {
			return rawTokenBytes(`{"alg":"HS256","typ":"JWT"}`, []byte("not json"), hmacSign(secret))
		}, "", QSHComputed, ErrMalformedToken},
		{"iss of the wrong type", func(t *testing.T) string {
			c := valid(t)
			c["iss"] = 12
			return rawToken(`{"alg":"HS256","typ":"JWT"}`, c, hmacSign(secret))
		}, "", QSHComputed, ErrMalformedToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := staticSecrets(tenantKey, secret)
			v := newHSVerifier(t, store)
			tgt := tc.target
			if tgt == "" {
				tgt = target
			}
			_, err := v.Verify(t.Context(), newRequest(t, "POST", tgt, tc.token(t)), tc.policy)
			assertIs(t, err, tc.want)
			if strings.Contains(err.Error(), tenantSecret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

func hmacSign(secret []byte) func(string) []byte {
	return func(in string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		return m.Sum(nil)
	}
}

func rawTokenBytes(header string, payload []byte, sign func(string) []byte) string {
	enc := func(b []byte) string { return strings.TrimRight(b64url(b), "=") }
	in := enc([]byte(header)) + "." + enc(payload)
	return in + "." + enc(sign(in))
}

func TestHS256VerifierFollowsSecretRotatedOnAnotherReplica(t *testing.T) {
	fresh := []byte("rotated-secret-from-a-new-installed-callback")
	tok := signHS256(t, hsClaims(t, "POST", appBase+"/enabled", ""), fresh)

	tests := []struct {
		name          string
		cached, fresh []byte
		wantErr       error
		wantRefreshes int32
	}{
		{"stale cache, fresh store: verifies", []byte(tenantSecret), fresh, nil, 1},
		{"current cache: no refresh", fresh, fresh, nil, 0},
		{"wrong secret both times", []byte(tenantSecret), []byte("also-wrong"), ErrBadSignature, 1},
		{"refresh returns the same secret", []byte(tenantSecret), []byte(tenantSecret), ErrBadSignature, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &scriptedSecrets{
				cached: map[string][]byte{tenantKey: tc.cached},
				fresh:  map[string][]byte{tenantKey: tc.fresh},
			}
			v := newHSVerifier(t, store)
			claims, err := v.Verify(t.Context(), newRequest(t, "POST", appBase+"/enabled", tok), QSHComputed)
			if tc.wantErr != nil {
				assertIs(t, err, tc.wantErr)
			} else if err != nil || claims.Issuer != tenantKey {
				t.Fatalf("Verify = %+v, %v", claims, err)
			}
			if got := store.refreshes.Load(); got != tc.wantRefreshes {
				t.Errorf("refreshes = %d, want %d", got, tc.wantRefreshes)
			}
		})
	}
}

func TestHS256VerifierTypesSecretStoreFailures(t *testing.T) {
	tok := signHS256(t, hsClaims(t, "POST", appBase+"/enabled", ""), []byte(tenantSecret))
	tests := []struct {
		name  string
		store *scriptedSecrets
		want  error
	}{
		{"store down is unavailable (503), not a bad token", &scriptedSecrets{err: errors.New("dial tcp: connection refused")}, ErrSecretUnavailable},
		{"tenant deleted is an unknown issuer", &scriptedSecrets{cached: map[string][]byte{}}, ErrUnknownIssuer},
		{"empty stored secret is never used as an HMAC key", staticSecrets(tenantKey, nil), ErrUnknownIssuer},
		{"tenant gone on refresh", &scriptedSecrets{cached: map[string][]byte{tenantKey: []byte("stale")}, fresh: map[string][]byte{}}, ErrUnknownIssuer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newHSVerifier(t, tc.store).Verify(t.Context(), newRequest(t, "POST", appBase+"/enabled", tok), QSHComputed)
			assertIs(t, err, tc.want)
		})
	}
	// The mapping callers use: transient store failures are 503.
	_, err := newHSVerifier(t, &scriptedSecrets{err: errors.New("timeout")}).Verify(t.Context(), newRequest(t, "POST", appBase+"/enabled", tok), QSHComputed)
	if got := StatusCode(err); got != 503 {
		t.Errorf("StatusCode = %d, want 503", got)
	}
}

func TestHS256VerifierAppliesLeeway(t *testing.T) {
	tests := []struct {
		name   string
		leeway time.Duration
		expIn  time.Duration
		want   error
	}{
		{"expired 29s ago within default 30s leeway", 0, -29 * time.Second, nil},
		{"expired exactly at the leeway edge", 0, -30 * time.Second, ErrExpired},
		{"custom leeway 5s refuses 6s ago", 5 * time.Second, -6 * time.Second, ErrExpired},
		{"custom leeway 5s accepts 4s ago", 5 * time.Second, -4 * time.Second, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := hsClaims(t, "POST", appBase+"/enabled", "")
			c["exp"] = hsNow.Add(tc.expIn).Unix()
			v, err := NewHS256Verifier(HS256Config{
				AppBaseURLs: []string{appBase}, Secrets: staticSecrets(tenantKey, []byte(tenantSecret)),
				Leeway: tc.leeway, Now: fixedClock(hsNow),
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(t.Context(), newRequest(t, "POST", appBase+"/enabled", signHS256(t, c, []byte(tenantSecret))), QSHComputed)
			if tc.want == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tc.want != nil {
				assertIs(t, err, tc.want)
			}
		})
	}
}

func TestNewHS256VerifierValidatesConfig(t *testing.T) {
	store := staticSecrets(tenantKey, []byte(tenantSecret))
	tests := []struct {
		name string
		cfg  HS256Config
	}{
		{"no secrets", HS256Config{AppBaseURLs: []string{appBase}}},
		{"no base URL", HS256Config{Secrets: store}},
		{"relative base URL", HS256Config{AppBaseURLs: []string{"/connect"}, Secrets: store}},
		{"unparsable base URL", HS256Config{AppBaseURLs: []string{"https://a b/%zz"}, Secrets: store}},
		{"negative leeway", HS256Config{AppBaseURLs: []string{appBase}, Secrets: store, Leeway: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewHS256Verifier(tc.cfg); err == nil {
				t.Fatal("NewHS256Verifier accepted an invalid config")
			}
		})
	}
}

func TestExtractToken(t *testing.T) {
	long := strings.Repeat("a", MaxTokenLength+1)
	tests := []struct {
		name, target, header, want string
		wantErr                    error
	}{
		{"authorization header", "/p", "JWT abc.def.ghi", "abc.def.ghi", nil},
		{"scheme is case-insensitive", "/p", "jwt abc.def.ghi", "abc.def.ghi", nil},
		{"query parameter", "/p?jwt=abc.def.ghi", "", "abc.def.ghi", nil},
		{"query wins over header, like ACE", "/p?jwt=from.query.tok", "JWT from.header.tok", "from.query.tok", nil},
		{"empty query value falls back to header", "/p?jwt=", "JWT from.header.tok", "from.header.tok", nil},
		{"encoded jwt name", "/p?j%77t=abc.def.ghi", "", "abc.def.ghi", nil},
		{"bearer scheme is not a Connect token", "/p", "Bearer abc.def.ghi", "", ErrMissingToken},
		{"empty JWT header", "/p", "JWT ", "", ErrMissingToken},
		{"nothing", "/p?x=1", "", "", ErrMissingToken},
		{"two query tokens are ambiguous", "/p?jwt=a.b.c&jwt=d.e.f", "", "", ErrMalformedToken},
		{"too long in header", "/p", "JWT " + long, "", ErrMalformedToken},
		{"too long in query", "/p?jwt=" + long, "", "", ErrMalformedToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRequest(t, "GET", tc.target, "")
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			got, err := ExtractToken(r)
			if tc.wantErr != nil {
				assertIs(t, err, tc.wantErr)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ExtractToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestStatusCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 200},
		{ErrKeyUnavailable, 503},
		{ErrSecretUnavailable, 503},
		{ErrUnknownKey, 401},
		{ErrBadSignature, 401},
		{ErrProductHostNotAllowed, 400},
		{errors.New("anything else"), 401},
	}
	for _, tc := range tests {
		if got := StatusCode(tc.err); got != tc.want {
			t.Errorf("StatusCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
