package connect

import (
	"crypto/hmac"
	"crypto/sha256"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzHS256SinglePass checks that the single-decoding path of the HS256
// verifier (verifySignature) ends exactly as golang-jwt's (parseWithLibrary):
// the same error text, the same claims, the same secret lookups.
func FuzzHS256SinglePass(f *testing.F) {
	good := signHS256(f, hsClaims(f, "POST", appBase+"/enabled", ""), []byte(tenantSecret))
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(good + "A")
	f.Add(signHS256(f, hsClaims(f, "POST", appBase+"/enabled", ""), []byte("another secret")))
	f.Add(vecSimpleToken)
	sign := func(in string) []byte {
		m := hmac.New(sha256.New, []byte(tenantSecret))
		m.Write([]byte(in))
		return m.Sum(nil)
	}
	iss := `{"iss":"` + tenantKey + `","exp":4102444800,"iat":1700000000,"qsh":"x"}`
	f.Add(rawTokenBytes(`{"alg":"HS256","typ":"JWT"}`, []byte(iss), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256","x":1e400}`, []byte(iss), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256","x":1}`, []byte(iss), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256","x":null}`, []byte(iss), func(string) []byte { return nil }))
	f.Add(rawTokenBytes(`{"alg":"HS256"}`, []byte(`{"iss":"`+tenantKey+`","exp":1e400}`), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256"}`, []byte(`{"iss":"`+tenantKey+`","iss":"x"}`), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256"}`, []byte(`{"iss":"nobody"}`), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256"}`, []byte(`null`), sign))
	f.Add(rawTokenBytes(`{"alg":"HS256"}`, []byte(` {"iss":"`+tenantKey+`"} `), sign))
	f.Add("eyJhbGciOiJIUzI1NiJ9.bnVsbA.")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.A")
	f.Add("eyJhbGciOiJIUzI1NiJ9.!.")
	f.Fuzz(func(t *testing.T, tok string) {
		hdr, err := parseHeader(tok)
		if err != nil || hdr.Alg != "HS256" {
			t.Skip() // refused before either path runs
		}
		run := func(fast bool) (jwtClaims, string, [2]int32) {
			s := &scriptedSecrets{
				cached: map[string][]byte{tenantKey: []byte(tenantSecret)},
				fresh:  map[string][]byte{tenantKey: []byte("rotated secret")},
			}
			v := newHSVerifier(t, s)
			var c jwtClaims
			if fast {
				err = v.verifySignature(t.Context(), tok, hdr, &c)
			} else {
				err = v.parseWithLibrary(t.Context(), tok, &c)
			}
			msg := "<nil>"
			if err != nil {
				msg = err.Error()
			}
			return c, msg, [2]int32{s.calls.Load(), s.refreshes.Load()}
		}
		fc, ferr, fcalls := run(true)
		lc, lerr, lcalls := run(false)
		if ferr != lerr || fcalls != lcalls {
			t.Fatalf("token %q: single pass %s (lookups %v), golang-jwt %s (lookups %v)", tok, ferr, fcalls, lerr, lcalls)
		}
		if ferr == "<nil>" {
			if diff := cmp.Diff(lc, fc); diff != "" {
				t.Fatalf("token %q: claims (-golang-jwt +single pass):\n%s", tok, diff)
			}
		}
	})
}
