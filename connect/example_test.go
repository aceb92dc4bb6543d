package connect_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/connectrelay/connectrelay/connect"
)

// The query string hash a product puts in the qsh claim of a lifecycle call.
func ExampleQSH() {
	u, _ := url.Parse("https://app.example.com/installed")
	fmt.Println(connect.CanonicalRequest("POST", u, ""))
	fmt.Println(connect.QSH("POST", u, ""))
	// Output:
	// POST&/installed&
	// 4a2e1de8ca74e6cafe8862d332fa3ac7a8e51e692bc6d798ea4dfedc14948bf4
}

// tenantSecrets stands in for the tenant store.
type tenantSecrets map[string]string

func (s tenantSecrets) SharedSecret(_ context.Context, clientKey string, _ bool) ([]byte, error) {
	secret, ok := s[clientKey]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", clientKey, connect.ErrUnknownIssuer)
	}
	return []byte(secret), nil
}

// Verifying a product->app call (here Atlassian's published "Simple" test
// vector, with the clock set to when it was signed), and mapping a refusal to
// the HTTP status Atlassian should see.
func ExampleHS256Verifier_Verify() {
	v, err := connect.NewHS256Verifier(connect.HS256Config{
		AppBaseURLs: []string{"https://example.com"},
		Secrets:     tenantSecrets{"jira:1234-5678-9000": "7512836e-9137-48ac-baaf-a1935b96e17a"},
		Now:         func() time.Time { return time.Unix(1466731100, 0) },
	})
	if err != nil {
		panic(err)
	}
	const token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJxc2giOiJiZTE2OTEwODU4YTQxZmQxOWVhNWMxYjRlOWRlY2NhOWE3ODRkMTAyNGNiMDBiMjE1OGRlZmUyZjI5ZGM4NmRkIiwiY29udGV4dCI6e30sImlzcyI6ImppcmE6MTIzNC01Njc4LTkwMDAiLCJleHAiOjE0NjY3MzEyNTUsImlhdCI6MTQ2NjczMTA3NX0.ssbmLUBemh6nQW3MH5o2fSdnOFTIKf2w0KASnnH8aXo"

	r := httptest.NewRequest(http.MethodGet, "https://example.com/test?param=value&jwt="+token, nil)
	claims, err := v.Verify(r.Context(), r, connect.QSHComputed)
	fmt.Println(claims.Issuer, err)

	// The same token for another query is refused with a typed error.
	r = httptest.NewRequest(http.MethodGet, "https://example.com/test?param=other&jwt="+token, nil)
	_, err = v.Verify(r.Context(), r, connect.QSHComputed)
	fmt.Println(errors.Is(err, connect.ErrQSHMismatch), connect.StatusCode(err))
	// Output:
	// jira:1234-5678-9000 <nil>
	// true 401
}

// Signing an app->product call (docs/protocol.md#outbound-requests).
func ExampleSignRequest() {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://x.atlassian.net/rest/api/3/myself", nil)
	err := connect.SignRequest(req, "https://x.atlassian.net", "my-app-key", []byte("test-shared-secret"), time.Unix(1700000000, 0))
	fmt.Println(err)
	fmt.Println(req.Header.Get("Authorization"))
	// Output:
	// <nil>
	// JWT eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJteS1hcHAta2V5IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxODAsInFzaCI6ImM3OTBlODYzY2VjZGRiZjEzNjlkNWUwNThkNWY3MWQ5ZDE5NzQxYTQ5N2E2ZTQ2ODEzNTE5MDkxMDk3NTk1MTMifQ.xSsmGBhssQqyixnkkO9d7-Lr_Boon_C_yPlWWw5NWJY
}

// Wiring the signed-install verifier as the receiver does: product hosts from
// CONNECT_PRODUCT_HOSTS, keys from Atlassian's CDN (or CONNECT_KEYS_CDN_URL).
func ExampleNewInstallVerifier() {
	hosts, err := connect.NewHostPolicy([]string{"*.atlassian.net", "*.jira.com", "*.jira-dev.com"})
	if err != nil {
		panic(err)
	}
	v, err := connect.NewInstallVerifier(connect.InstallConfig{
		AppBaseURL: "https://app.example.com",
		Hosts:      hosts,
		Keys:       connect.NewKeyServer(connect.KeyServerConfig{}),
	})
	if err != nil {
		panic(err)
	}
	// A forged install for a foreign product is refused before any key is fetched.
	r := httptest.NewRequest(http.MethodPost, "https://app.example.com/installed", nil)
	_, err = v.Verify(r.Context(), r, "jira:client", "https://evil.example.com")
	fmt.Println(errors.Is(err, connect.ErrProductHostNotAllowed), connect.StatusCode(err))
	// Output: true 400
}
