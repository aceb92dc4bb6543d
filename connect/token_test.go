package connect

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// hsRawToken signs a literal claims set with the tenant's secret, for claim
// shapes golang-jwt would not produce.
func hsRawToken(claims string) string {
	return rawToken(`{"alg":"HS256","typ":"JWT"}`, json.RawMessage(claims), func(in string) []byte {
		m := hmac.New(sha256.New, []byte(tenantSecret))
		m.Write([]byte(in))
		return m.Sum(nil)
	})
}

// rsRawToken signs a literal claims set with key as a signed install.
func rsRawToken(t testing.TB, claims string, key *rsa.PrivateKey) string {
	t.Helper()
	return rawToken(`{"alg":"RS256","typ":"JWT","kid":"`+testKid+`"}`, json.RawMessage(claims), func(in string) []byte {
		sum := sha256.Sum256([]byte(in))
		sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
}

// TestClaims_AreDecodedStrictly: member names are exact (encoding/json's
// case-insensitive matching read {"iss":A,"ISS":B} as B), each member appears
// once, numeric dates are JSON numbers within year 0..9999 (exp as a string
// and exp 9e18 were accepted), iat is required, and string claims are
// strings.
func TestClaims_AreDecodedStrictly(t *testing.T) {
	const target = appBase + "/enabled"
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	qsh := QSH("POST", u, "")
	// hsNow is 1750000000.
	tests := []struct {
		name   string
		claims string // @ISS@ and @QSH@ are replaced
		want   error  // nil: accepted
		iss    string // the issuer read when accepted
	}{
		{"well formed", `{"iss":"@ISS@","iat":1749999990,"exp":1750000180,"qsh":"@QSH@"}`, nil, tenantKey},
		{"fractional dates", `{"iss":"@ISS@","iat":1749999990.25,"exp":1750000180.5,"qsh":"@QSH@"}`, nil, tenantKey},
		{"exponent notation", `{"iss":"@ISS@","iat":1.74999999e9,"exp":1.75000018e9,"qsh":"@QSH@"}`, nil, tenantKey},
		{"upper-case twin of iss is not iss", `{"iss":"@ISS@","ISS":"attacker","iat":1749999990,"exp":1750000180,"qsh":"@QSH@"}`, nil, tenantKey},
		{"upper-case iss only", `{"ISS":"@ISS@","iat":1749999990,"exp":1750000180,"qsh":"@QSH@"}`, ErrMissingClaim, ""},
		{"upper-case exp only", `{"iss":"@ISS@","iat":1749999990,"EXP":1750000180,"qsh":"@QSH@"}`, ErrMissingClaim, ""},
		{"duplicate iss", `{"iss":"attacker","iss":"@ISS@","iat":1749999990,"exp":1750000180,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"exp as a string", `{"iss":"@ISS@","iat":1749999990,"exp":"1750000180","qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"exp far in the future", `{"iss":"@ISS@","iat":1749999990,"exp":9e18,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"exp after year 9999", `{"iss":"@ISS@","iat":1749999990,"exp":253402300800,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"negative exp", `{"iss":"@ISS@","iat":1749999990,"exp":-1,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"exp null", `{"iss":"@ISS@","iat":1749999990,"exp":null,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"exp a boolean", `{"iss":"@ISS@","iat":1749999990,"exp":true,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"missing iat", `{"iss":"@ISS@","exp":1750000180,"qsh":"@QSH@"}`, ErrMissingClaim, ""},
		{"iat as a string", `{"iss":"@ISS@","iat":"1749999990","exp":1750000180,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"nbf as a string", `{"iss":"@ISS@","iat":1749999990,"nbf":"1749999990","exp":1750000180,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"iss a number", `{"iss":42,"iat":1749999990,"exp":1750000180,"qsh":"@QSH@"}`, ErrMalformedToken, ""},
		{"qsh an array", `{"iss":"@ISS@","iat":1749999990,"exp":1750000180,"qsh":["@QSH@"]}`, ErrMalformedToken, ""},
		{"claims an array", `[{"iss":"@ISS@"}]`, ErrMalformedToken, ""},
	}
	hs := newHSVerifier(t, staticSecrets(tenantKey, []byte(tenantSecret)))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := strings.NewReplacer("@QSH@", qsh, "@ISS@", tenantKey).Replace(tc.claims)
			c, err := hs.Verify(t.Context(), newRequest(t, "POST", target, hsRawToken(claims)), QSHComputed)
			if tc.want != nil {
				if err == nil {
					t.Fatalf("accepted %s (issuer %q, exp %v)", claims, c.Issuer, c.ExpiresAt)
				}
				assertIs(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatalf("Verify(%s): %v", claims, err)
			}
			if c.Issuer != tc.iss || c.IssuedAt.IsZero() {
				t.Errorf("issuer %q, iat %v; want %q and an iat", c.Issuer, c.IssuedAt, tc.iss)
			}
		})
	}
}

// TestClaims_InstallAudienceIsDecodedStrictly: aud is a string or an array of
// strings, under its exact name.
func TestClaims_InstallAudienceIsDecodedStrictly(t *testing.T) {
	k, _ := testKeys(t)
	u, err := url.Parse(installTarget)
	if err != nil {
		t.Fatal(err)
	}
	qsh := QSH("POST", u, "")
	v := newInstallVerifier(t, staticKeys{testKid: &k.PublicKey})
	tests := []struct {
		name string
		aud  string
		want error
	}{
		{"string", `"aud":"` + appBase + `"`, nil},
		{"array of strings", `"aud":["https://other.example","` + appBase + `"]`, nil},
		{"number", `"aud":1`, ErrMalformedToken},
		{"array with a number", `"aud":["` + appBase + `",1]`, ErrMalformedToken},
		{"upper-case AUD only", `"AUD":"` + appBase + `"`, ErrMissingClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := `{"iss":"` + installClientKey + `",` + tc.aud + `,"iat":1749999995,"exp":1750000180,"qsh":"` + qsh + `"}`
			_, err := v.Verify(t.Context(), newRequest(t, "POST", installTarget, rsRawToken(t, claims, k)), installClientKey, installProduct)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify(%s): %v", claims, err)
				}
				return
			}
			assertIs(t, err, tc.want)
		})
	}
}
