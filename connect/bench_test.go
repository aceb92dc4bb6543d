package connect

import (
	"context"
	"net/http/httptest"
	"net/url"
	"testing"
)

// go test -run='^$' -bench=. -benchmem ./connect/

func BenchmarkQSH(b *testing.B) {
	cases := []struct{ name, url string }{
		{"lifecycle", "https://app.example.com/installed"},
		{"iframe query", "https://app.example.com/page?xdm_e=https%3A%2F%2Fx.atlassian.net&cp=&lic=active&cv=1001.0.0-SNAPSHOT&tz=Europe%2FBerlin&loc=en-US&user_id=a+b&jwt=x.y.z"},
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = QSH("POST", u, "")
			}
		})
	}
}

func BenchmarkHS256Verify(b *testing.B) {
	target := appBase + "/migration/events"
	tok := signHS256(b, hsClaims(b, "POST", target, ""), []byte(tenantSecret))
	v := newHSVerifier(b, staticSecrets(tenantKey, []byte(tenantSecret)))
	r := httptest.NewRequest("POST", target, nil)
	r.Header.Set("Authorization", "JWT "+tok)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, r, QSHComputed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRS256VerifyCachedKey(b *testing.B) {
	k, _ := testKeys(b)
	stub := newKeyServerStub(b, map[string][]byte{testKid: publicPEM(b, &k.PublicKey)})
	keys := NewKeyServer(KeyServerConfig{BaseURL: stub.URL})
	v := newInstallVerifier(b, keys)
	tok := signRS256(b, installClaims(b, installTarget, ""), k, testKid)
	r := httptest.NewRequest("POST", installTarget, nil)
	r.Header.Set("Authorization", "JWT "+tok)
	ctx := context.Background()
	if _, err := v.Verify(ctx, r, installClientKey, installProduct); err != nil { // warm the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, r, installClientKey, installProduct); err != nil {
			b.Fatal(err)
		}
	}
	if n := stub.requests.Load(); n != 1 {
		b.Fatalf("key server saw %d requests, want 1 (cached)", n)
	}
}
