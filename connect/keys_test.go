package connect

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testKid = "d2466692-d9b3-4245-8208-a601568541ae"

func TestValidKeyID(t *testing.T) {
	tests := []struct {
		kid  string
		want bool
	}{
		{testKid, true},
		{"jira/prod/key_1", true},
		{"ABC-def_123", true},
		{"", false},
		{"../etc/passwd", false},
		{"a/../b", false},
		{"a/..", false},
		{"key?x=1", false},
		{"key#frag", false},
		{"key%2e%2e", false},
		{"key.pem", false},
		{"/leading", false},
		{"trailing/", false},
		{"a//b", false},
		{"sp ace", false},
		{"new\nline", false},
		{"héllo", false},
		{"http://evil.example/key", false},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
	}
	for _, tc := range tests {
		if got := ValidKeyID(tc.kid); got != tc.want {
			t.Errorf("ValidKeyID(%q) = %v, want %v", tc.kid, got, tc.want)
		}
	}
}

func TestParsePublicKeyPEMIsTolerantOfTransportDamage(t *testing.T) {
	k, _ := testKeys(t)
	lf := string(publicPEM(t, &k.PublicKey))
	body := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lf), "-----BEGIN PUBLIC KEY-----\n"), "\n-----END PUBLIC KEY-----")
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)}))
	tests := []struct {
		name, pem string
	}{
		{"LF", lf},
		{"CRLF", strings.ReplaceAll(lf, "\n", "\r\n")},
		{"surrounding whitespace", "\n\n  \t" + lf + "\n\n  "},
		{"one line", "-----BEGIN PUBLIC KEY-----" + strings.ReplaceAll(body, "\n", "") + "-----END PUBLIC KEY-----"},
		{"literal \\n escapes (JSON-escaped body)", strings.ReplaceAll(lf, "\n", `\n`)},
		{"spaces instead of newlines", "-----BEGIN PUBLIC KEY----- " + strings.ReplaceAll(body, "\n", " ") + " -----END PUBLIC KEY-----"},
		{"PKCS#1 RSA PUBLIC KEY", pkcs1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePublicKeyPEM([]byte(tc.pem))
			if err != nil {
				t.Fatalf("ParsePublicKeyPEM: %v", err)
			}
			if !got.Equal(&k.PublicKey) {
				t.Error("parsed a different key")
			}
		})
	}
}

func TestParsePublicKeyPEMRefusesWhatIsNotAnRSAPublicKey(t *testing.T) {
	k, _ := testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
	}{
		{"empty", nil},
		{"HTML error page", []byte("<html><body>Access denied</body></html>")},
		{"1024-bit key", publicPEM(t, &small.PublicKey)},
		{"EC key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("garbage")})},
		{"no END line", []byte("-----BEGIN PUBLIC KEY-----MIIB")},
		{"bad base64", []byte("-----BEGIN PUBLIC KEY----- !!!! -----END PUBLIC KEY-----")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := ParsePublicKeyPEM(tc.pem); err == nil {
				t.Fatalf("ParsePublicKeyPEM accepted it: %v", got)
			}
		})
	}
}

func TestKeyServerBasesFollowsProtocolTable(t *testing.T) {
	tests := []struct {
		product string
		want    []string
	}{
		{"https://example.atlassian.net", []string{keysProdPrimary, keysProdFallback}},
		{"https://EXAMPLE.atlassian.net/wiki", []string{keysProdPrimary, keysProdFallback}},
		{"https://example.jira.com", []string{keysProdPrimary, keysProdFallback}},
		{"https://example.jira-dev.com", []string{keysStagingPrimary, keysStagingFallback}},
		{"https://example.atlassian-us-gov-mod.net", []string{keysFedProdPrimary, keysFedProdFallback}},
		{"https://example.atlassian-stg-fedm.net", []string{keysFedStgPrimary, keysFedStgFallback}},
		{"https://atlassian.net.evil.com", []string{keysProdFallback}},
		{"https://evilatlassian.net", []string{keysProdFallback}},
		{"", []string{keysProdFallback}},
		{"::not a url", []string{keysProdFallback}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(KeyServerBases(tc.product), tc.want); diff != "" {
			t.Errorf("KeyServerBases(%q) (-got +want):\n%s", tc.product, diff)
		}
	}
}

// newTestKeyServer returns a KeyServer whose CDN table points at the stubs.
func newTestKeyServer(cfg KeyServerConfig, stubs ...*keyServerStub) *KeyServer {
	ks := NewKeyServer(cfg)
	var bases []string
	for _, s := range stubs {
		bases = append(bases, s.URL)
	}
	ks.bases = func(string) []string { return bases }
	return ks
}

const productURL = "https://example.atlassian.net"

func TestKeyServerCollapsesConcurrentColdMissesIntoOneFetch(t *testing.T) {
	k, _ := testKeys(t)
	stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	stub.delay = 100 * time.Millisecond // keep the flight open while callers pile up
	ks := newTestKeyServer(KeyServerConfig{}, stub)

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key, err := ks.PublicKey(context.Background(), testKid, productURL)
			if err == nil && !key.Equal(&k.PublicKey) {
				err = errors.New("wrong key")
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := stub.requests.Load(); got != 1 {
		t.Errorf("key server saw %d requests, want 1", got)
	}
	if _, err := ks.PublicKey(t.Context(), testKid, productURL); err != nil {
		t.Fatal(err)
	}
	if got := stub.requests.Load(); got != 1 {
		t.Errorf("warm cache still fetched: %d requests", got)
	}
	if diff := cmp.Diff(stub.requestPaths(), []string{"/" + testKid}); diff != "" {
		t.Errorf("request paths (-got +want):\n%s", diff)
	}
}

func TestKeyServerCachesUnknownKeysBriefly(t *testing.T) {
	clock := &mutableClock{t: time.Unix(1_750_000_000, 0)}
	stub := newKeyServerStub(t, nil)
	ks := newTestKeyServer(KeyServerConfig{Now: clock.Now, NegativeTTL: 30 * time.Second}, stub)

	for range 3 {
		_, err := ks.PublicKey(t.Context(), "unknown-kid", productURL)
		assertIs(t, err, ErrUnknownKey)
		if StatusCode(err) != http.StatusUnauthorized {
			t.Errorf("StatusCode = %d, want 401", StatusCode(err))
		}
	}
	if got := stub.requests.Load(); got != 1 {
		t.Errorf("requests = %d, want 1 (negative cache)", got)
	}
	clock.Advance(31 * time.Second)
	_, err := ks.PublicKey(t.Context(), "unknown-kid", productURL)
	assertIs(t, err, ErrUnknownKey)
	if got := stub.requests.Load(); got != 2 {
		t.Errorf("requests = %d after the negative TTL, want 2", got)
	}
}

func TestKeyServerExpiresKeysAfterTTL(t *testing.T) {
	k, _ := testKeys(t)
	clock := &mutableClock{t: time.Unix(1_750_000_000, 0)}
	stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	ks := newTestKeyServer(KeyServerConfig{Now: clock.Now}, stub) // default TTL 24h

	fetch := func() {
		t.Helper()
		if _, err := ks.PublicKey(t.Context(), testKid, productURL); err != nil {
			t.Fatal(err)
		}
	}
	fetch()
	clock.Advance(23 * time.Hour)
	fetch()
	if got := stub.requests.Load(); got != 1 {
		t.Fatalf("requests = %d within TTL, want 1", got)
	}
	clock.Advance(time.Hour + time.Second)
	fetch()
	if got := stub.requests.Load(); got != 2 {
		t.Errorf("requests = %d after TTL, want 2", got)
	}
}

func TestKeyServerCacheIsBounded(t *testing.T) {
	k, _ := testKeys(t)
	p := publicPEM(t, &k.PublicKey)
	stub := newKeyServerStub(t, map[string][]byte{"k1": p, "k2": p, "k3": p})
	ks := newTestKeyServer(KeyServerConfig{MaxEntries: 2}, stub)
	get := func(kid string) {
		t.Helper()
		if _, err := ks.PublicKey(t.Context(), kid, productURL); err != nil {
			t.Fatal(err)
		}
	}
	get("k1")
	get("k2")
	get("k1") // k1 is now the most recently used
	get("k3") // evicts k2
	if n := ks.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	before := stub.requests.Load()
	get("k1")
	if stub.requests.Load() != before {
		t.Error("k1 was evicted although recently used")
	}
	get("k2")
	if stub.requests.Load() != before+1 {
		t.Error("k2 was not evicted (no refetch)")
	}
}

func TestKeyServerTransientFailuresAreUnavailableAndNotCached(t *testing.T) {
	k, _ := testKeys(t)
	tests := []struct {
		name  string
		setup func(s *keyServerStub)
	}{
		{"500", func(s *keyServerStub) { s.setStatus(500) }},
		{"503", func(s *keyServerStub) { s.setStatus(503) }},
		{"429", func(s *keyServerStub) { s.setStatus(429) }},
		{"timeout", func(s *keyServerStub) { s.delay = time.Second }},
		{"200 with a body that is not a key", func(s *keyServerStub) { s.keys[testKid] = []byte("<html>maintenance</html>") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
			tc.setup(stub)
			ks := newTestKeyServer(KeyServerConfig{Timeout: 100 * time.Millisecond}, stub)
			for i := range 2 {
				_, err := ks.PublicKey(t.Context(), testKid, productURL)
				assertIs(t, err, ErrKeyUnavailable)
				if errors.Is(err, ErrUnknownKey) {
					t.Errorf("transient failure also reads as unknown key: %v", err)
				}
				if got := StatusCode(err); got != http.StatusServiceUnavailable {
					t.Errorf("StatusCode = %d, want 503", got)
				}
				if got := stub.requests.Load(); got != int32(i+1) {
					t.Errorf("after call %d requests = %d: failure was cached", i+1, got)
				}
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		stub := newKeyServerStub(t, nil)
		stub.Close()
		ks := newTestKeyServer(KeyServerConfig{}, stub)
		_, err := ks.PublicKey(t.Context(), testKid, productURL)
		assertIs(t, err, ErrKeyUnavailable)
	})
}

func TestKeyServerFallsBackToSecondCDN(t *testing.T) {
	k, _ := testKeys(t)
	p := publicPEM(t, &k.PublicKey)
	tests := []struct {
		name            string
		primaryStatus   int
		primaryHasKey   bool
		fallbackStatus  int
		fallbackHasKey  bool
		want            error
		wantFallbackHit bool
	}{
		{name: "primary down, fallback has the key", primaryStatus: 502, fallbackHasKey: true, wantFallbackHit: true},
		{name: "primary 404, fallback has the key", fallbackHasKey: true, wantFallbackHit: true},
		{name: "primary has the key, fallback untouched", primaryHasKey: true},
		{name: "both 404 is unknown", want: ErrUnknownKey, wantFallbackHit: true},
		{name: "primary down, fallback 404 is unavailable, not unknown", primaryStatus: 503, want: ErrKeyUnavailable, wantFallbackHit: true},
		{name: "primary 404, fallback down is unavailable", fallbackStatus: 500, want: ErrKeyUnavailable, wantFallbackHit: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keysOf := func(has bool) map[string][]byte {
				if has {
					return map[string][]byte{testKid: p}
				}
				return map[string][]byte{}
			}
			primary := newKeyServerStub(t, keysOf(tc.primaryHasKey))
			primary.setStatus(tc.primaryStatus)
			fallback := newKeyServerStub(t, keysOf(tc.fallbackHasKey))
			fallback.setStatus(tc.fallbackStatus)
			ks := newTestKeyServer(KeyServerConfig{}, primary, fallback)

			key, err := ks.PublicKey(t.Context(), testKid, productURL)
			if tc.want != nil {
				assertIs(t, err, tc.want)
			} else if err != nil || !key.Equal(&k.PublicKey) {
				t.Fatalf("PublicKey = %v, %v", key, err)
			}
			if hit := fallback.requests.Load() > 0; hit != tc.wantFallbackHit {
				t.Errorf("fallback hit = %v, want %v", hit, tc.wantFallbackHit)
			}
		})
	}
}

func TestKeyServerBaseURLOverride(t *testing.T) {
	k, _ := testKeys(t)
	stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	ks := NewKeyServer(KeyServerConfig{BaseURL: stub.URL + "/"})
	if got := ks.bases("https://example.jira-dev.com"); len(got) != 1 || got[0] != stub.URL {
		t.Fatalf("bases = %q, want only the override", got)
	}
	if _, err := ks.PublicKey(t.Context(), testKid, productURL); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stub.requestPaths(), []string{"/" + testKid}); diff != "" {
		t.Errorf("paths (-got +want):\n%s", diff)
	}
}

func TestKeyServerRefusesUnsafeKidWithoutFetching(t *testing.T) {
	stub := newKeyServerStub(t, nil)
	ks := newTestKeyServer(KeyServerConfig{}, stub)
	for _, kid := range []string{"../secret", "a?b", ""} {
		_, err := ks.PublicKey(t.Context(), kid, productURL)
		assertIs(t, err, ErrBadKeyID)
	}
	if got := stub.requests.Load(); got != 0 {
		t.Errorf("requests = %d, want 0", got)
	}
}

func TestKeyServerCallerCancellationDoesNotPoisonOthers(t *testing.T) {
	k, _ := testKeys(t)
	stub := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	stub.delay = 200 * time.Millisecond
	ks := newTestKeyServer(KeyServerConfig{}, stub)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := ks.PublicKey(ctx, testKid, productURL)
	assertIs(t, err, ErrKeyUnavailable)

	// A patient caller joins (or follows) the same flight and gets the key.
	if _, err := ks.PublicKey(t.Context(), testKid, productURL); err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if got := stub.requests.Load(); got != 1 {
		t.Errorf("requests = %d, want 1", got)
	}
}

func TestKeyRedirectPolicyNeverDowngradesFromHTTPS(t *testing.T) {
	req := func(raw string) *http.Request {
		r, err := http.NewRequestWithContext(t.Context(), "GET", raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name string
		next string
		via  []string
		ok   bool
	}{
		{"https to https", "https://cdn2.example/k", []string{"https://cdn.example/k"}, true},
		{"https to http", "http://cdn2.example/k", []string{"https://cdn.example/k"}, false},
		{"http override to http", "http://127.0.0.1:1/k", []string{"http://127.0.0.1:2/k"}, true},
		{"fourth redirect", "https://e/k", []string{"https://a/k", "https://b/k", "https://c/k"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var via []*http.Request
			for _, v := range tc.via {
				via = append(via, req(v))
			}
			if err := keyRedirectPolicy(req(tc.next), via); (err == nil) != tc.ok {
				t.Errorf("keyRedirectPolicy = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestKeyServer_FloodOfFreshKidsIsBoundedByTheFetchBudget is the red-team
// finding: 600 installs with fresh kids in half a second caused 600 CDN
// fetches (1200 with the primary/fallback table) and evicted the genuine key.
// Fetches of distinct unknown kids are bounded by the token bucket; over the
// budget the answer is ErrKeyFetchLimited (503) without a fetch, and the
// genuine key stays cached and verifies.
func TestKeyServer_FloodOfFreshKidsIsBoundedByTheFetchBudget(t *testing.T) {
	k, _ := testKeys(t)
	clock := &mutableClock{t: time.Unix(1_750_000_000, 0)}
	primary := newKeyServerStub(t, map[string][]byte{testKid: publicPEM(t, &k.PublicKey)})
	fallback := newKeyServerStub(t, nil)
	ks := newTestKeyServer(KeyServerConfig{Now: clock.Now, FetchRate: 10, FetchBurst: 20, MaxEntries: 8}, primary, fallback)
	if _, err := ks.PublicKey(t.Context(), testKid, productURL); err != nil {
		t.Fatal(err)
	}
	fetches := func() int32 { return primary.requests.Load() + fallback.requests.Load() }

	var unknown, limited int
	for i := range 600 {
		_, err := ks.PublicKey(t.Context(), fmt.Sprintf("fresh-kid-%d", i), productURL)
		switch {
		case errors.Is(err, ErrUnknownKey):
			unknown++
		case errors.Is(err, ErrKeyFetchLimited):
			limited++
			if StatusCode(err) != http.StatusServiceUnavailable {
				t.Fatalf("StatusCode(%v) = %d, want 503", err, StatusCode(err))
			}
		default:
			t.Fatalf("fresh kid %d: %v", i, err)
		}
	}
	if unknown != 19 || limited != 581 {
		t.Errorf("unknown = %d, limited = %d; want 19 fetched (the burst less the genuine key's) and 581 limited", unknown, limited)
	}
	// One fetch for the genuine key, then two (primary, fallback) per fetched kid.
	if got := fetches(); got != 1+2*19 {
		t.Errorf("key servers saw %d requests, want %d", got, 1+2*19)
	}

	before := fetches()
	v := newInstallVerifier(t, ks)
	tok := signRS256(t, installClaims(t, installTarget, ""), k, testKid)
	if _, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, tok), installClientKey, installProduct); err != nil {
		t.Fatalf("genuine install after the flood: %v", err)
	}
	if got := fetches(); got != before {
		t.Errorf("the genuine key was fetched again (%d requests): the flood evicted it", got-before)
	}

	// Over the budget the verifier answers the sentinel (503), not a 401.
	flood := signRS256(t, installClaims(t, installTarget, ""), k, "yet-another-kid")
	_, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, flood), installClientKey, installProduct)
	assertIs(t, err, ErrKeyFetchLimited)

	// The bucket refills at the configured rate.
	clock.Advance(time.Second)
	for i := range 10 {
		if _, err := ks.PublicKey(t.Context(), fmt.Sprintf("later-kid-%d", i), productURL); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("later kid %d after a second: %v, want a fetch answering ErrUnknownKey", i, err)
		}
	}
	if _, err := ks.PublicKey(t.Context(), "one-too-many", productURL); !errors.Is(err, ErrKeyFetchLimited) {
		t.Errorf("11th kid within the second: %v, want ErrKeyFetchLimited", err)
	}
}

// TestKeyServer_UnknownKidsNeverEvictCachedKeys: negative answers live in a
// cache of their own, so a flood of unknown kids cannot push out a genuine
// key, however small the positive cache.
func TestKeyServer_UnknownKidsNeverEvictCachedKeys(t *testing.T) {
	k, _ := testKeys(t)
	p := publicPEM(t, &k.PublicKey)
	stub := newKeyServerStub(t, map[string][]byte{"k1": p, "k2": p})
	ks := newTestKeyServer(KeyServerConfig{MaxEntries: 2, NegativeMaxEntries: 4, FetchRate: 1e6, FetchBurst: 1000}, stub)
	for _, kid := range []string{"k1", "k2"} {
		if _, err := ks.PublicKey(t.Context(), kid, productURL); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		_, err := ks.PublicKey(t.Context(), fmt.Sprintf("unknown-%d", i), productURL)
		assertIs(t, err, ErrUnknownKey)
	}
	before := stub.requests.Load()
	for _, kid := range []string{"k1", "k2"} {
		if _, err := ks.PublicKey(t.Context(), kid, productURL); err != nil {
			t.Fatal(err)
		}
	}
	if got := stub.requests.Load() - before; got != 0 {
		t.Errorf("%d genuine keys were refetched: unknown kids evicted them", got)
	}
	if n := ks.negative.len(); n != 4 {
		t.Errorf("negative cache holds %d entries, want its bound 4", n)
	}
}

func TestKeyEnvironment_FollowsTheKeyServerTable(t *testing.T) {
	tests := []struct {
		product string
		want    string
	}{
		{"https://example.atlassian.net", KeyEnvProduction},
		{"https://EXAMPLE.jira.com/wiki", KeyEnvProduction},
		{"https://example.jira-dev.com", KeyEnvStaging},
		{"https://EXAMPLE.JIRA-DEV.COM/wiki", KeyEnvStaging},
		{"https://example.atlassian-us-gov-mod.net", KeyEnvFedRAMP},
		{"https://example.atlassian-stg-fedm.net", KeyEnvFedRAMPStaging},
		{"https://jira-dev.com.evil.example", KeyEnvProduction},
		{"https://evil-jira-dev.com", KeyEnvProduction},
		{"http://127.0.0.1:8080", KeyEnvProduction},
		{"", KeyEnvProduction},
	}
	for _, tc := range tests {
		if got := KeyEnvironment(tc.product); got != tc.want {
			t.Errorf("KeyEnvironment(%q) = %q, want %q", tc.product, got, tc.want)
		}
	}
}
