// Package connect is the Atlassian Connect trust core of connectrelay: it
// decides whether a request really comes from an Atlassian product, and signs
// the requests the app sends back.
//
// It covers the three kinds of Connect JWT the service meets:
//
//   - signed installs (RS256): the installed/uninstalled lifecycle callbacks,
//     verified with Atlassian's install public keys ([InstallVerifier],
//     [KeyServer]);
//   - product-to-app calls (HS256): enabled/disabled, webhooks and App
//     Migration Platform events, verified with the tenant's shared secret
//     ([HS256Verifier]);
//   - app-to-product calls (HS256): outbound REST calls signed with the
//     tenant's shared secret ([NewOutboundToken], [SignRequest]).
//
// Every verifier binds the token to the request through the query string hash
// ([QSH], [CanonicalRequest]) and reports failures as errors wrapping one of
// the package's sentinel errors, so that callers branch with [errors.Is] and
// answer 401 or 503 ([StatusCode]).
//
// The algorithm is never taken from the token: the RS256 path only ever uses
// an *rsa.PublicKey and the HS256 path only ever a tenant secret, so an
// attacker cannot make a public key PEM act as an HMAC secret (algorithm
// confusion).
//
// The package depends on the standard library, github.com/golang-jwt/jwt/v5
// and golang.org/x/sync only, so that it can be reused and audited on its own.
// The protocol facts it implements, with links to Atlassian's documentation,
// are in docs/protocol.md (signed installs, shared-secret requests, the query
// string hash, outbound requests).
package connect
