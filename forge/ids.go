package forge

import (
	"fmt"
	"strings"
)

// Protocol constants of the Forge Invocation Token (FIT).
const (
	// DefaultJWKSURL is Atlassian's production JWKS for FITs; all Forge app
	// environments (DEVELOPMENT, STAGING, PRODUCTION) use it on commercial
	// cloud.
	DefaultJWKSURL = "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"
	// Issuer is the iss claim of every FIT.
	Issuer = "forge/invocation-token"
	// AppARIPrefix prefixes the app UUID in aud and app.id.
	AppARIPrefix = "ari:cloud:ecosystem::app/"
	// InstallationARIPrefix prefixes the installation UUID in
	// app.installationId.
	InstallationARIPrefix = "ari:cloud:ecosystem::installation/"
	// EnvironmentARIPrefix prefixes "<appUuid>/<envUuid>" in
	// app.environment.id.
	EnvironmentARIPrefix = "ari:cloud:ecosystem::environment/"
	// SystemTokenHeader carries the app system token (an opaque OAuth
	// token, never logged) when the endpoint enables appSystemToken.
	SystemTokenHeader = "X-Forge-Oauth-System"
)

// IsUUID reports whether s is a 36-character lowercase UUID
// (8-4-4-4-12 hex digits and dashes).
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// NormalizeAppID returns the app ARI for s, which is either a bare app UUID
// or an app ARI; any other value is an error wrapping ErrConfig that names
// the value.
func NormalizeAppID(s string) (string, error) {
	u := strings.TrimPrefix(s, AppARIPrefix)
	if !IsUUID(u) {
		return "", fmt.Errorf("%w: app id %q is neither a lowercase UUID nor %s<uuid>", ErrConfig, s, AppARIPrefix)
	}
	return AppARIPrefix + u, nil
}

// IsInstallationID reports whether s is shaped as an installation ARI:
// InstallationARIPrefix followed by a lowercase UUID.
func IsInstallationID(s string) bool {
	u, ok := strings.CutPrefix(s, InstallationARIPrefix)
	return ok && IsUUID(u)
}
