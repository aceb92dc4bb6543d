package forge_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

// A receiver verifies the token of a Forge call before it trusts anything in
// it; tenant identity comes from the verified claims only.
func ExampleVerifier_VerifyToken() {
	iss, _ := forgetest.NewIssuer("8db33809-1f32-48bb-8c52-5877dab48107")
	v, err := forge.NewVerifier(forge.Config{
		AppID:      "8db33809-1f32-48bb-8c52-5877dab48107", // or the app ARI
		JWKSURL:    "https://jwks.invalid/jwks.json",
		HTTPClient: forgetest.StaticClient(iss), // production: leave nil
	})
	if err != nil {
		panic(err)
	}
	tok, _ := iss.Mint(forgetest.Token{
		InstallationID: "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5",
		CloudID:        "d0d52620-3203-4cfa-8db5-f2587155f0dd",
		ModuleKey:      "lifecycle-endpoint",
	})
	c, err := v.VerifyToken(context.Background(), tok, "lifecycle-endpoint")
	fmt.Println(err, c.App.InstallationID, c.CloudID())

	_, err = v.VerifyToken(context.Background(), tok, "migration-endpoint")
	fmt.Println(errors.Is(err, forge.ErrClaims), forge.HTTPStatus(err))
	// Output:
	// <nil> ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5 d0d52620-3203-4cfa-8db5-f2587155f0dd
	// true 401
}
