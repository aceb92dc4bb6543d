package forge_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

type fixture struct {
	iss *forgetest.Issuer
	srv *httptest.Server
	v   *forge.Verifier
}

func newFixture(t *testing.T, mod func(*forge.Config)) *fixture {
	t.Helper()
	iss, err := forgetest.NewIssuer(forgetest.NewUUID())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	t.Cleanup(srv.Close)
	cfg := forge.Config{AppID: iss.AppID(), JWKSURL: srv.URL, AllowInsecureJWKS: true, MinRefresh: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	v, err := forge.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{iss: iss, srv: srv, v: v}
}

func (f *fixture) mint(t *testing.T, tok forgetest.Token) string {
	t.Helper()
	s, err := f.iss.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/forge/lifecycle", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func TestVerify_RefusesEveryTokenRuleBreach(t *testing.T) {
	f := newFixture(t, nil)
	other, err := forgetest.NewIssuer(forgetest.NewUUID())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := []struct {
		name string
		tok  forgetest.Token
		want error
	}{
		{"wrong iss", forgetest.Token{Issuer: "forge/context-token"}, forge.ErrClaims},
		{"bare aud", forgetest.Token{Audience: f.iss.AppUUID()}, forge.ErrClaims},
		{"foreign aud", forgetest.Token{Audience: other.AppID()}, forge.ErrClaims},
		{"HS256 signed with the public key", forgetest.Token{Alg: "HS256"}, forge.ErrAlgorithm},
		{"alg none", forgetest.Token{Alg: "none"}, forge.ErrAlgorithm},
		{"missing kid", forgetest.Token{OmitKid: true}, forge.ErrMalformed},
		{"expired beyond the leeway", forgetest.Token{IssuedAt: now.Add(-time.Minute), TTL: 25 * time.Second}, forge.ErrClaims},
		{"not yet valid beyond the leeway", forgetest.Token{IssuedAt: now.Add(time.Minute)}, forge.ErrClaims},
		{"environment not allowed", forgetest.Token{EnvironmentType: "DEVELOPMENT"}, forge.ErrClaims},
		{"foreign apiBaseUrl host", forgetest.Token{APIBaseURL: "https://evil.example/ex/jira/x"}, forge.ErrClaims},
		{"apiBaseUrl look-alike host", forgetest.Token{APIBaseURL: "https://api.atlassian.com.evil.example/ex/jira/x"}, forge.ErrClaims},
		{"apiBaseUrl over http", forgetest.Token{APIBaseURL: "http://api.atlassian.com/ex/jira/x"}, forge.ErrClaims},
		{"apiBaseUrl with userinfo", forgetest.Token{APIBaseURL: "https://api.atlassian.com@127.0.0.1/ex/jira/x"}, forge.ErrClaims},
		{"apiBaseUrl IP literal", forgetest.Token{APIBaseURL: "https://127.0.0.1/ex/jira/x"}, forge.ErrClaims},
		{"apiBaseUrl trailing dot", forgetest.Token{APIBaseURL: "https://api.atlassian.com./ex/jira/x"}, forge.ErrClaims},
		{"app.id is not aud", forgetest.Token{AppExtra: map[string]any{"id": other.AppID()}}, forge.ErrClaims},
		{"installationId not an installation ARI", forgetest.Token{InstallationID: "ari:cloud:ecosystem::app/" + forgetest.NewUUID()}, forge.ErrClaims},
		{"installation.id differs", forgetest.Token{AppExtra: map[string]any{"installation": map[string]any{"id": forgetest.NewInstallationID()}}}, forge.ErrClaims},
		{"Isolated Cloud label", forgetest.Token{Extra: map[string]any{"icLabel": "ic1"}}, forge.ErrClaims},
		{"no jti", forgetest.Token{Extra: map[string]any{"jti": nil}}, forge.ErrClaims},
		{"no exp", forgetest.Token{Extra: map[string]any{"exp": nil}}, forge.ErrClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.v.Verify(context.Background(), bearer(f.mint(t, tc.tok)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if got := forge.HTTPStatus(err); got != http.StatusUnauthorized {
				t.Fatalf("HTTPStatus = %d, want 401", got)
			}
		})
	}
}

func TestVerify_RefusesTokenSignedByAnotherKeyWithTheSameKid(t *testing.T) {
	f := newFixture(t, nil)
	other, err := forgetest.NewIssuer(f.iss.AppID())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := other.Mint(forgetest.Token{Kid: f.iss.Kid()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Verify(context.Background(), bearer(tok)); !errors.Is(err, forge.ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
}

func TestVerify_RefusesMissingAndOversizedAuthorization(t *testing.T) {
	f := newFixture(t, nil)
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	if _, err := f.v.Verify(context.Background(), r); !errors.Is(err, forge.ErrNoToken) {
		t.Fatalf("no header: %v", err)
	}
	r.Header.Set("Authorization", "Basic "+f.mint(t, forgetest.Token{}))
	if _, err := f.v.Verify(context.Background(), r); !errors.Is(err, forge.ErrNoToken) {
		t.Fatalf("Basic scheme: %v", err)
	}
	big := bearer(strings.Repeat("a", 40<<10))
	if _, err := f.v.Verify(context.Background(), big); !errors.Is(err, forge.ErrMalformed) {
		t.Fatalf("40 KiB header: %v", err)
	}
	if f.iss.FetchCount() != 0 {
		t.Fatalf("a refused header fetched the JWKS %d times", f.iss.FetchCount())
	}
}

func TestVerify_AcceptsValidTokenWithinLeewayAndLenientClaims(t *testing.T) {
	f := newFixture(t, nil)
	active := true
	inst := forgetest.NewInstallationID()
	cloud := forgetest.NewCloudID()
	tok := f.mint(t, forgetest.Token{
		InstallationID: inst, CloudID: cloud, License: &forge.License{Active: &active},
		IssuedAt: time.Now().Add(-27 * time.Second), // expired 2 s ago: inside the 5 s leeway
		AppExtra: map[string]any{"futureMember": map[string]any{"x": 1}},
		Extra:    map[string]any{"unknownTopLevel": "kept out"},
	})
	c, err := f.v.Verify(context.Background(), bearer(tok), "lifecycle-endpoint")
	if err != nil {
		t.Fatal(err)
	}
	if c.App.InstallationID != inst || c.CloudID() != cloud || c.App.ID != f.iss.AppID() {
		t.Fatalf("claims %+v", c.App)
	}
	if a, known := c.App.License.State(); !a || !known {
		t.Fatalf("license with active only: State() = %v, %v", a, known)
	}
	if c.InstallationUUID() != strings.TrimPrefix(inst, forge.InstallationARIPrefix) {
		t.Fatalf("InstallationUUID = %q", c.InstallationUUID())
	}
}

func TestVerify_BindsTheRouteModuleKey(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(t, forgetest.Token{ModuleKey: "migration-endpoint"})
	if _, err := f.v.Verify(context.Background(), bearer(tok), "lifecycle-endpoint"); !errors.Is(err, forge.ErrClaims) {
		t.Fatalf("module key of another route: %v", err)
	}
	if _, err := f.v.Verify(context.Background(), bearer(tok), "lifecycle-endpoint", "migration-endpoint"); err != nil {
		t.Fatalf("bound module key: %v", err)
	}
}

func TestVerify_UnknownKidRefreshesOnceThenRefuses(t *testing.T) {
	clock := time.Now()
	f := newFixture(t, func(c *forge.Config) {
		c.MinRefresh = 30 * time.Second
		c.Now = func() time.Time { return clock }
	})
	if _, err := f.v.Verify(context.Background(), bearer(f.mint(t, forgetest.Token{IssuedAt: clock}))); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Minute) // past MinRefresh: one refresh is allowed
	before := f.iss.FetchCount()
	for i := 0; i < 20; i++ {
		tok := f.mint(t, forgetest.Token{IssuedAt: clock, Kid: "forge/invocation-token/unknown-" + forgetest.NewUUID()})
		if _, err := f.v.Verify(context.Background(), bearer(tok)); !errors.Is(err, forge.ErrUnknownKey) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if got := f.iss.FetchCount() - before; got != 1 {
		t.Fatalf("20 unknown kids fetched the JWKS %d times, want 1", got)
	}
}

func TestVerify_RotatedKeyIsFetchedOnce(t *testing.T) {
	f := newFixture(t, func(c *forge.Config) { c.MinRefresh = time.Nanosecond })
	if _, err := f.v.Verify(context.Background(), bearer(f.mint(t, forgetest.Token{}))); err != nil {
		t.Fatal(err)
	}
	if err := f.iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	before := f.iss.FetchCount()
	for i := 0; i < 3; i++ {
		if _, err := f.v.Verify(context.Background(), bearer(f.mint(t, forgetest.Token{}))); err != nil {
			t.Fatalf("rotated key: %v", err)
		}
	}
	if got := f.iss.FetchCount() - before; got != 1 {
		t.Fatalf("rotation fetched the JWKS %d times, want 1", got)
	}
}

func TestVerify_JWKSOutageKeepsWarmKeysAndColdAnswers503(t *testing.T) {
	clock := time.Now()
	f := newFixture(t, func(c *forge.Config) {
		c.KeyTTL = time.Minute
		c.MinRefresh = time.Nanosecond
		c.Now = func() time.Time { return clock }
	})
	if err := f.v.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.iss.SetDown(true)
	clock = clock.Add(2 * time.Minute) // past the key TTL: a refresh is due and fails
	tok := f.mint(t, forgetest.Token{IssuedAt: clock})
	if _, err := f.v.Verify(context.Background(), bearer(tok)); err != nil {
		t.Fatalf("warm keys during a JWKS outage: %v", err)
	}

	cold := newFixture(t, nil)
	cold.iss.SetDown(true)
	_, err := cold.v.Verify(context.Background(), bearer(cold.mint(t, forgetest.Token{})))
	if !errors.Is(err, forge.ErrKeysUnavailable) || forge.HTTPStatus(err) != http.StatusServiceUnavailable {
		t.Fatalf("cold JWKS down: %v (status %d), want ErrKeysUnavailable / 503", err, forge.HTTPStatus(err))
	}
}

func TestNormalizeAppID(t *testing.T) {
	u := forgetest.NewUUID()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{u, forge.AppARIPrefix + u, true},
		{forge.AppARIPrefix + u, forge.AppARIPrefix + u, true},
		{"", "", false},
		{"not-a-uuid", "", false},
		{forge.InstallationARIPrefix + u, "", false},
	} {
		got, err := forge.NormalizeAppID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("NormalizeAppID(%q) = %q, %v", tc.in, got, err)
		}
	}
}
