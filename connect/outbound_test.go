package connect

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestSignRequestSetsVerifiableJWTHeader(t *testing.T) {
	const appKey = "com.vendor.app"
	secret := []byte(tenantSecret)
	now := time.Unix(1_750_000_000, 0)
	tests := []struct {
		name, method, target, product, wantCanonical string
	}{
		{"jira GET with query", "GET", "https://example.atlassian.net/rest/api/3/search?jql=project%20%3D%20X&maxResults=50",
			"https://example.atlassian.net", "GET&/rest/api/3/search&jql=project%20%3D%20X&maxResults=50"},
		{"confluence drops /wiki", "GET", "https://example.atlassian.net/wiki/rest/api/space",
			"https://example.atlassian.net/wiki", "GET&/rest/api/space&"},
		{"confluence base URL with trailing slash", "PUT", "https://example.atlassian.net/wiki/rest/api/content/1",
			"https://example.atlassian.net/wiki/", "PUT&/rest/api/content/1&"},
		{"migration progress POST", "POST", "https://example.atlassian.net/rest/atlassian-connect/1/migration/progress/t-1",
			"https://example.atlassian.net", "POST&/rest/atlassian-connect/1/migration/progress/t-1&"},
		{"empty method means GET", "", "https://example.atlassian.net/rest/api/3/myself",
			"https://example.atlassian.net", "GET&/rest/api/3/myself&"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(context.Background(), tc.method, tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := SignRequest(req, tc.product, appKey, secret, now); err != nil {
				t.Fatal(err)
			}
			h := req.Header.Get("Authorization")
			tok, ok := strings.CutPrefix(h, "JWT ")
			if !ok {
				t.Fatalf("Authorization = %q", h)
			}
			var c jwt.MapClaims
			_, err = jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now })).
				ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return secret, nil })
			if err != nil {
				t.Fatalf("golang-jwt refuses our token: %v", err)
			}
			if c["iss"] != appKey || c["iat"] != float64(now.Unix()) || c["exp"] != float64(now.Unix()+180) {
				t.Errorf("claims = %v", c)
			}
			if want := qshOf(tc.wantCanonical); c["qsh"] != want {
				t.Errorf("qsh = %v, want hash of %q", c["qsh"], tc.wantCanonical)
			}
		})
	}
}

// TestOutboundTokenRoundTripsThroughHS256Verifier checks that our two halves
// agree: a token we sign verifies with our own verifier configured as the
// product would be.
func TestOutboundTokenRoundTripsThroughHS256Verifier(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	u, _ := url.Parse("https://example.atlassian.net/wiki/rest/api/content?spaceKey=DS&expand=body.storage")
	tok, err := NewOutboundToken("GET", u, "https://example.atlassian.net/wiki", "app-key", []byte(tenantSecret), now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewHS256Verifier(HS256Config{
		AppBaseURLs: []string{"https://example.atlassian.net/wiki"},
		Secrets:     staticSecrets("app-key", []byte(tenantSecret)),
		Now:         fixedClock(now.Add(time.Minute)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), newRequest(t, "GET", u.String(), tok), QSHComputed); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestNewOutboundTokenRefusesToSignForOtherHosts(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	tests := []struct {
		name, target, product, appKey string
		secret                        []byte
	}{
		{"other host", "https://evil.example/rest/api/3/myself", "https://example.atlassian.net", "k", []byte("s")},
		{"other scheme", "http://example.atlassian.net/rest", "https://example.atlassian.net", "k", []byte("s")},
		{"outside the base path", "https://example.atlassian.net/rest/api", "https://example.atlassian.net/wiki", "k", []byte("s")},
		{"base path prefix but not a segment", "https://example.atlassian.net/wikipedia/x", "https://example.atlassian.net/wiki", "k", []byte("s")},
		{"relative product base URL", "https://example.atlassian.net/rest", "/wiki", "k", []byte("s")},
		{"empty secret", "https://example.atlassian.net/rest", "https://example.atlassian.net", "k", nil},
		{"empty app key", "https://example.atlassian.net/rest", "https://example.atlassian.net", "", []byte("s")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if tok, err := NewOutboundToken("GET", u, tc.product, tc.appKey, tc.secret, now); err == nil {
				t.Fatalf("signed %s", tok)
			}
		})
	}
	if _, err := NewOutboundToken("GET", nil, "https://example.atlassian.net", "k", []byte("s"), now); err == nil {
		t.Error("signed a nil URL")
	}
	if _, err := NewOutboundToken("", &url.URL{Scheme: "https", Host: "example.atlassian.net"}, "https://example.atlassian.net", "k", []byte("s"), now); err == nil {
		t.Error("signed an empty method")
	}
}
