package connect

import (
	"context"
	"crypto/rsa"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	installClientKey = "jira:8b7c-client"
	installProduct   = "https://example.atlassian.net"
	installTarget    = appBase + "/installed"
)

var installNow = time.Unix(1_750_000_000, 0)

func newInstallVerifier(t testing.TB, keys KeyProvider, allowed ...string) *InstallVerifier {
	t.Helper()
	hosts, err := NewHostPolicy([]string{"*.atlassian.net", "*.jira.com", "*.jira-dev.com"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewInstallVerifier(InstallConfig{
		AppBaseURL:      appBase,
		AllowedBaseURLs: allowed,
		Hosts:           hosts,
		Keys:            keys,
		Now:             fixedClock(installNow),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// installClaims returns the claims Atlassian puts in a signed install of
// POST target.
func installClaims(t testing.TB, target, basePath string) jwt.MapClaims {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	return jwt.MapClaims{
		"iss":     installClientKey,
		"sub":     "557058:admin",
		"aud":     appBase,
		"iat":     installNow.Add(-5 * time.Second).Unix(),
		"exp":     installNow.Add(3 * time.Minute).Unix(),
		"qsh":     QSH("POST", u, basePath),
		"context": map[string]any{},
	}
}

func TestInstallVerifierAcceptsSignedInstalls(t *testing.T) {
	k, _ := testKeys(t)
	keys := staticKeys{testKid: &k.PublicKey}
	tests := []struct {
		name    string
		target  string
		allowed []string
		mutate  func(c jwt.MapClaims)
		base    string
	}{
		{name: "installed", target: installTarget},
		{name: "uninstalled", target: appBase + "/uninstalled"},
		{name: "aud with one trailing slash", target: installTarget, mutate: func(c jwt.MapClaims) { c["aud"] = appBase + "/" }},
		{name: "aud as an array", target: installTarget, mutate: func(c jwt.MapClaims) { c["aud"] = []string{appBase} }},
		{name: "aud is an older allowed base URL with a path", target: "https://old.example/addon/installed", allowed: []string{"https://old.example/addon/"},
			base: "/addon", mutate: func(c jwt.MapClaims) { c["aud"] = "https://old.example/addon" }},
		{name: "exp passed within the leeway", target: installTarget, mutate: func(c jwt.MapClaims) { c["exp"] = installNow.Add(-10 * time.Second).Unix() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := installClaims(t, tc.target, tc.base)
			if tc.mutate != nil {
				tc.mutate(c)
			}
			tok := signRS256(t, c, k, testKid)
			v := newInstallVerifier(t, keys, tc.allowed...)
			got, err := v.Verify(t.Context(), newRequest(t, "POST", tc.target, tok), installClientKey, installProduct)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Issuer != installClientKey || got.KeyID != testKid || got.Subject != "557058:admin" || len(got.Audience) != 1 {
				t.Errorf("claims = %+v", got)
			}
		})
	}
}

func TestInstallVerifierRefusesAttacks(t *testing.T) {
	k, other := testKeys(t)
	pubPEM := publicPEM(t, &k.PublicKey)
	valid := func(t *testing.T) jwt.MapClaims { return installClaims(t, installTarget, "") }
	rs := func(t *testing.T, mutate func(jwt.MapClaims)) string {
		c := valid(t)
		mutate(c)
		return signRS256(t, c, k, testKid)
	}
	tests := []struct {
		name       string
		token      func(t *testing.T) string
		clientKey  string // installClientKey when empty
		product    string // installProduct when empty
		want       error
		wantNoKeys bool // the key server must not be asked
	}{
		{name: "no token", token: func(*testing.T) string { return "" }, want: ErrMissingToken, wantNoKeys: true},
		{name: "alg none", token: func(t *testing.T) string {
			return rawToken(`{"alg":"none","typ":"JWT","kid":"`+testKid+`"}`, valid(t), nil)
		}, want: ErrBadAlgorithm, wantNoKeys: true},
		{name: "HS256 signed with the RSA public key PEM (alg confusion)", token: func(t *testing.T) string {
			return signHS256(t, valid(t), pubPEM)
		}, want: ErrBadAlgorithm, wantNoKeys: true},
		{name: "HMAC-with-PEM signature under an RS256 header", token: func(t *testing.T) string {
			return rawToken(`{"alg":"RS256","typ":"JWT","kid":"`+testKid+`"}`, valid(t), hmacSign(pubPEM))
		}, want: ErrBadSignature},
		{name: "HS256 signed with the tenant shared secret", token: func(t *testing.T) string {
			return signHS256(t, valid(t), []byte(tenantSecret))
		}, want: ErrBadAlgorithm, wantNoKeys: true},
		{name: "RS512", token: func(t *testing.T) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodRS512, valid(t))
			tok.Header["kid"] = testKid
			s, err := tok.SignedString(k)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, want: ErrBadAlgorithm, wantNoKeys: true},
		{name: "unknown kid (key server 404)", token: func(t *testing.T) string {
			return signRS256(t, valid(t), k, "0e9a7d3c-unknown")
		}, want: ErrUnknownKey},
		{name: "kid with ../", token: func(t *testing.T) string { return signRS256(t, valid(t), k, "../../admin") }, want: ErrBadKeyID, wantNoKeys: true},
		{name: "kid with ?", token: func(t *testing.T) string { return signRS256(t, valid(t), k, "key?redirect=evil") }, want: ErrBadKeyID, wantNoKeys: true},
		{name: "kid that is a URL", token: func(t *testing.T) string { return signRS256(t, valid(t), k, "https://evil.example/key") }, want: ErrBadKeyID, wantNoKeys: true},
		{name: "missing kid", token: func(t *testing.T) string { return signRS256(t, valid(t), k, "") }, want: ErrBadKeyID, wantNoKeys: true},
		{name: "signed by another key", token: func(t *testing.T) string { return signRS256(t, valid(t), other, testKid) }, want: ErrBadSignature},
		{name: "claims tampered after signing", token: func(t *testing.T) string {
			p := strings.Split(signRS256(t, valid(t), k, testKid), ".")
			c := valid(t)
			c["iss"] = "jira:victim"
			q := strings.Split(signRS256(t, c, other, testKid), ".")
			return p[0] + "." + q[1] + "." + p[2]
		}, want: ErrBadSignature},
		{name: "missing iss", token: func(t *testing.T) string { return rs(t, func(c jwt.MapClaims) { delete(c, "iss") }) }, want: ErrMissingClaim},
		{name: "wrong aud", token: func(t *testing.T) string {
			return rs(t, func(c jwt.MapClaims) { c["aud"] = "https://other-app.example.com" })
		}, want: ErrBadAudience},
		{name: "aud with two trailing slashes", token: func(t *testing.T) string {
			return rs(t, func(c jwt.MapClaims) { c["aud"] = appBase + "//" })
		}, want: ErrBadAudience},
		{name: "aud prefix of the app URL", token: func(t *testing.T) string {
			return rs(t, func(c jwt.MapClaims) { c["aud"] = "https://app.example" })
		}, want: ErrBadAudience},
		{name: "missing aud", token: func(t *testing.T) string { return rs(t, func(c jwt.MapClaims) { delete(c, "aud") }) }, want: ErrMissingClaim},
		{name: "qsh for another path", token: func(t *testing.T) string {
			return signRS256(t, installClaims(t, appBase+"/uninstalled", ""), k, testKid)
		}, want: ErrQSHMismatch},
		{name: "context-qsh on a lifecycle path", token: func(t *testing.T) string {
			return rs(t, func(c jwt.MapClaims) { c["qsh"] = ContextQSH })
		}, want: ErrQSHMismatch},
		{name: "missing qsh", token: func(t *testing.T) string { return rs(t, func(c jwt.MapClaims) { delete(c, "qsh") }) }, want: ErrMissingClaim},
		{name: "expired", token: func(t *testing.T) string {
			return rs(t, func(c jwt.MapClaims) { c["exp"] = installNow.Add(-time.Minute).Unix() })
		}, want: ErrExpired},
		{name: "missing exp", token: func(t *testing.T) string { return rs(t, func(c jwt.MapClaims) { delete(c, "exp") }) }, want: ErrMissingClaim},
		{name: "iss differs from body clientKey", token: func(t *testing.T) string { return signRS256(t, valid(t), k, testKid) },
			clientKey: "jira:victim-tenant", want: ErrIssuerMismatch},
		{name: "10 KB garbage token", token: func(*testing.T) string { return strings.Repeat("x", 10<<10) }, want: ErrMalformedToken, wantNoKeys: true},
		{name: "garbage with dots", token: func(*testing.T) string { return "...." }, want: ErrMalformedToken, wantNoKeys: true},
		{name: "foreign product host", token: func(t *testing.T) string { return signRS256(t, valid(t), k, testKid) },
			product: "https://evil.example.com", want: ErrProductHostNotAllowed, wantNoKeys: true},
		{name: "product host over http", token: func(t *testing.T) string { return signRS256(t, valid(t), k, testKid) },
			product: "http://example.atlassian.net", want: ErrProductHostNotAllowed, wantNoKeys: true},
		{name: "missing body clientKey", token: func(t *testing.T) string { return signRS256(t, valid(t), k, testKid) },
			clientKey: "-", want: ErrMissingClaim, wantNoKeys: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := newKeyServerStub(t, map[string][]byte{testKid: pubPEM})
			keys := newTestKeyServer(KeyServerConfig{}, stub)
			v := newInstallVerifier(t, keys)
			clientKey, product := installClientKey, installProduct
			switch tc.clientKey {
			case "":
			case "-":
				clientKey = ""
			default:
				clientKey = tc.clientKey
			}
			if tc.product != "" {
				product = tc.product
			}
			_, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, tc.token(t)), clientKey, product)
			assertIs(t, err, tc.want)
			if n := stub.requests.Load(); tc.wantNoKeys && n != 0 {
				t.Errorf("key server was asked %d times", n)
			}
			if p := stub.requestPaths(); len(p) > 0 && strings.ContainsAny(strings.Join(p, ""), "?.") {
				t.Errorf("unsafe key server request: %q", p)
			}
		})
	}
}

// TestInstallVerifierChecksInProtocolOrder pins the order of docs/protocol.md#signed-installs
// when a token has several faults.
func TestInstallVerifierChecksInProtocolOrder(t *testing.T) {
	k, _ := testKeys(t)
	keys := staticKeys{testKid: &k.PublicKey}
	v := newInstallVerifier(t, keys)
	tests := []struct {
		name           string
		mutate         func(c jwt.MapClaims)
		kid, clientKey string
		want           error
	}{
		{"aud before qsh", func(c jwt.MapClaims) { c["aud"] = "https://x.example"; c["qsh"] = "bad" }, testKid, installClientKey, ErrBadAudience},
		{"qsh before exp", func(c jwt.MapClaims) { c["qsh"] = "bad"; c["exp"] = 1 }, testKid, installClientKey, ErrQSHMismatch},
		{"exp before iss == clientKey", func(c jwt.MapClaims) { c["exp"] = 1 }, testKid, "other", ErrExpired},
		{"iss presence before aud", func(c jwt.MapClaims) { delete(c, "iss"); c["aud"] = "x" }, testKid, installClientKey, ErrMissingClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := installClaims(t, installTarget, "")
			tc.mutate(c)
			_, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, signRS256(t, c, k, tc.kid)), tc.clientKey, installProduct)
			assertIs(t, err, tc.want)
		})
	}
}

// brokenKeys is a KeyProvider that fails with an untyped error.
type brokenKeys struct{}

func (brokenKeys) PublicKey(context.Context, string, string) (*rsa.PublicKey, error) {
	return nil, errors.New("vault sealed")
}

// nilKeys returns neither key nor error.
type nilKeys struct{}

func (nilKeys) PublicKey(context.Context, string, string) (*rsa.PublicKey, error) { return nil, nil }

func TestInstallVerifierTypesKeyProviderFailures(t *testing.T) {
	k, _ := testKeys(t)
	tok := signRS256(t, installClaims(t, installTarget, ""), k, testKid)
	for name, keys := range map[string]KeyProvider{"untyped error": brokenKeys{}, "nil key": nilKeys{}} {
		t.Run(name, func(t *testing.T) {
			_, err := newInstallVerifier(t, keys).Verify(t.Context(), newRequest(t, "POST", installTarget, tok), installClientKey, installProduct)
			assertIs(t, err, ErrKeyUnavailable)
		})
	}
	t.Run("key server down is 503", func(t *testing.T) {
		stub := newKeyServerStub(t, nil)
		stub.setStatus(503)
		_, err := newInstallVerifier(t, newTestKeyServer(KeyServerConfig{}, stub)).Verify(t.Context(), newRequest(t, "POST", installTarget, tok), installClientKey, installProduct)
		assertIs(t, err, ErrKeyUnavailable)
		if StatusCode(err) != 503 {
			t.Errorf("StatusCode = %d", StatusCode(err))
		}
	})
}

func TestNewInstallVerifierValidatesConfig(t *testing.T) {
	hosts, _ := NewHostPolicy([]string{"*.atlassian.net"})
	keys := staticKeys{}
	tests := []struct {
		name string
		cfg  InstallConfig
	}{
		{"no app base URL", InstallConfig{Hosts: hosts, Keys: keys}},
		{"relative app base URL", InstallConfig{AppBaseURL: "/x", Hosts: hosts, Keys: keys}},
		{"bad allowed base URL", InstallConfig{AppBaseURL: appBase, AllowedBaseURLs: []string{"nope"}, Hosts: hosts, Keys: keys}},
		{"no hosts", InstallConfig{AppBaseURL: appBase, Keys: keys}},
		{"no keys", InstallConfig{AppBaseURL: appBase, Hosts: hosts}},
		{"negative leeway", InstallConfig{AppBaseURL: appBase, Hosts: hosts, Keys: keys, Leeway: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewInstallVerifier(tc.cfg); err == nil {
				t.Fatal("accepted an invalid config")
			}
		})
	}
}

// TestVerifiersAreSafeForConcurrentUse shares one verifier of each kind
// between goroutines (run with -race).
func TestVerifiersAreSafeForConcurrentUse(t *testing.T) {
	k, _ := testKeys(t)
	stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	inst := newInstallVerifier(t, newTestKeyServer(KeyServerConfig{}, stub))
	hs := newHSVerifier(t, staticSecrets(tenantKey, []byte(tenantSecret)))
	rsTok := signRS256(t, installClaims(t, installTarget, ""), k, testKid)
	hsTok := signHS256(t, hsClaims(t, "POST", appBase+"/enabled", ""), []byte(tenantSecret))
	badTok := signHS256(t, hsClaims(t, "POST", appBase+"/enabled", ""), []byte("wrong"))

	errs := make(chan error, 40)
	for i := range 20 {
		go func() {
			_, err := inst.Verify(context.Background(), newRequest(t, "POST", installTarget, rsTok), installClientKey, installProduct)
			errs <- err
		}()
		go func() {
			// Every other request carries a bad signature to exercise the refresh path.
			tok := hsTok
			if i%2 == 1 {
				tok = badTok
			}
			_, err := hs.Verify(context.Background(), newRequest(t, "POST", appBase+"/enabled", tok), QSHComputed)
			if i%2 == 1 && errors.Is(err, ErrBadSignature) {
				err = nil
			}
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestInstallVerifier_BoundsTokenLifetime: a signed install must carry iat, not
// be issued in the future beyond the leeway, and live at most
// MaxInstallTokenLifetime, so a captured token is replayable only briefly.
func TestInstallVerifier_BoundsTokenLifetime(t *testing.T) {
	k, _ := testKeys(t)
	v := newInstallVerifier(t, staticKeys{testKid: &k.PublicKey})
	tests := []struct {
		name   string
		mutate func(c jwt.MapClaims)
		want   error // nil: accepted
	}{
		{"Atlassian's 3 minutes", func(jwt.MapClaims) {}, nil},
		{"exactly 5 minutes", func(c jwt.MapClaims) {
			c["iat"] = installNow.Add(-time.Minute).Unix()
			c["exp"] = installNow.Add(4 * time.Minute).Unix()
		}, nil},
		{"iat within the leeway ahead", func(c jwt.MapClaims) {
			c["iat"] = installNow.Add(20 * time.Second).Unix()
			c["exp"] = installNow.Add(3 * time.Minute).Unix()
		}, nil},
		{"missing iat", func(c jwt.MapClaims) { delete(c, "iat") }, ErrMissingClaim},
		{"iat beyond the leeway ahead", func(c jwt.MapClaims) {
			c["iat"] = installNow.Add(time.Minute).Unix()
			c["exp"] = installNow.Add(3 * time.Minute).Unix()
		}, ErrBadLifetime},
		{"5 minutes and 1 second", func(c jwt.MapClaims) {
			c["iat"] = installNow.Add(-time.Minute).Unix()
			c["exp"] = installNow.Add(4*time.Minute + time.Second).Unix()
		}, ErrBadLifetime},
		{"a year", func(c jwt.MapClaims) { c["exp"] = installNow.Add(365 * 24 * time.Hour).Unix() }, ErrBadLifetime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := installClaims(t, installTarget, "")
			tc.mutate(c)
			_, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, signRS256(t, c, k, testKid)), installClientKey, installProduct)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			assertIs(t, err, tc.want)
			if !strings.Contains(err.Error(), "iat") {
				t.Errorf("error %q does not name iat", err)
			}
		})
	}
}
