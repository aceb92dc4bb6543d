package handlers

import (
	"context"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

// TenantSecretSource is the tenant package's secret lookup as the receiver uses it.
type TenantSecretSource interface {
	SharedSecret(ctx context.Context, clientKey string, refresh bool) ([]byte, error)
}

// Secrets adapts the tenant secret cache to connect.SecretStore: an unknown tenant
// becomes connect.ErrUnknownIssuer (401), anything else connect.ErrSecretUnavailable
// (503), so a database outage never looks like a bad token.
func Secrets(src TenantSecretSource) connect.SecretStore { return secretAdapter{src} }

type secretAdapter struct{ src TenantSecretSource }

func (a secretAdapter) SharedSecret(ctx context.Context, clientKey string, refresh bool) ([]byte, error) {
	// An issuer no tenant could have (control characters, invalid UTF-8, absurd
	// length) is unknown without asking the database, which would reject some of
	// them with an error that must not look like an outage.
	if !plausibleClientKey(clientKey) {
		return nil, fmt.Errorf("%w: implausible clientKey", connect.ErrUnknownIssuer)
	}
	b, err := a.src.SharedSecret(ctx, clientKey, refresh)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, tenant.ErrNotFound):
		return nil, fmt.Errorf("%w: %w", connect.ErrUnknownIssuer, err)
	default:
		return nil, fmt.Errorf("%w: %w", connect.ErrSecretUnavailable, err)
	}
}

// maxClientKeyLength bounds an issuer worth looking up; real clientKeys are UUIDs
// or short "jira:..." strings.
const maxClientKeyLength = 256

func plausibleClientKey(k string) bool {
	if k == "" || len(k) > maxClientKeyLength || !utf8.ValidString(k) {
		return false
	}
	for _, r := range k {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
