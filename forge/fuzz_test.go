package forge_test

import (
	"context"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

// FuzzVerifyToken feeds arbitrary tokens to a verifier with warm keys: it must
// never panic, and it must accept only tokens its issuer really signed (the
// seeds include one such token, mutated by the fuzzer into tokens that must
// all be refused unless unchanged).
func FuzzVerifyToken(f *testing.F) {
	iss, err := forgetest.NewIssuer("8db33809-1f32-48bb-8c52-5877dab48107")
	if err != nil {
		f.Fatal(err)
	}
	v, err := forge.NewVerifier(forge.Config{AppID: iss.AppID(), JWKSURL: "https://jwks.invalid/jwks.json",
		HTTPClient: forgetest.StaticClient(iss), MinRefresh: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	good, err := iss.Mint(forgetest.Token{TTL: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.VerifyToken(context.Background(), tok)
		if err == nil && tok != good {
			// A different string may still carry the same signed bytes (base64
			// padding bits), but it must then decode to the same claims.
			if c.App.ID != iss.AppID() {
				t.Fatalf("accepted a token not minted by the issuer: %q", tok)
			}
		}
		if err != nil && c != nil {
			t.Fatal("claims returned with an error")
		}
	})
}
