// Package forge verifies Forge Invocation Tokens (FITs): the RS256 JWTs that
// Atlassian's Forge platform sends in the Authorization header of every call
// to an app's remote backend, lifecycle and migration events included. It
// imports nothing of this module, like its Connect sibling, package connect.
//
// A token is accepted only when all of these hold (see
// https://developer.atlassian.com/platform/forge/remote/essentials/):
//
//   - Authorization is "Bearer <token>", one token of at most 32 KiB;
//   - the header alg is RS256 (none and HS* are refused before any key is
//     looked up, so the header never chooses how it is verified) and kid is
//     present and well-formed;
//   - the key comes from the configured JWKS URL only (never from the token),
//     cached for KeyTTL, refreshed at most once per MinRefresh on an unknown
//     kid (concurrent refreshes collapse into one), the last good key set
//     kept through a JWKS outage; a cold cache that cannot fetch answers
//     ErrKeysUnavailable, which a receiver maps to 503 (HTTPStatus);
//   - iss is forge/invocation-token, aud is the configured app ARI (a bare
//     UUID is normalised), app.id equals aud, exp, nbf and iat hold within
//     Leeway, jti is present;
//   - app.installationId is an installation ARI, equal to
//     app.installation.id when both are present; app.environment.type is
//     allowed; app.apiBaseUrl is https on an allowed host, because a worker
//     later sends the app's system token there;
//   - the module key is one of those bound to the route, when given.
//
// Unknown claim members are ignored: Atlassian removes documented members
// (app.version, license.isActive) on published dates, and a strict decoder
// would then refuse every call. Isolated Cloud tokens (icLabel) are refused:
// their key sets are not configurable yet.
//
// Package forgetest mints tokens and serves their key set, for tests and the
// local simulator.
package forge
