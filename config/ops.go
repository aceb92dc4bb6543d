package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Ops is the part of the configuration the operator commands (connectctl
// tenants, transfers, stale, reencrypt, tasks) read: the same variables as
// Load, so an operator runs them with the service's environment.
type Ops struct {
	// DatabaseURL is DATABASE_URL, as in Config.
	DatabaseURL string
	// RedisURL is REDIS_URL, as in Config.
	RedisURL string
	// SecretKey is CONNECT_SECRET_KEY decoded; nil when it is unset (outside
	// dev mode): only re-encryption needs it.
	SecretKey []byte
	// PreviousSecretKeys is CONNECT_SECRET_KEY_PREVIOUS decoded.
	PreviousSecretKeys [][]byte
	// DevMode is DEV_MODE, as in Config.
	DevMode bool
}

// LoadOps reads the operator commands' variables through getenv, with Load's
// defaults and checks; the errors name the variable and wrap ErrInvalid.
func LoadOps(getenv func(string) string) (Ops, error) {
	l := loader{getenv: getenv}
	o := Ops{
		DatabaseURL: l.str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		RedisURL:    l.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
		DevMode:     l.boolean("DEV_MODE", false),
	}
	l.scheme("REDIS_URL", o.RedisURL, "redis", "rediss")
	l.scheme("DATABASE_URL", o.DatabaseURL, "postgres", "postgresql")
	if raw := l.str("CONNECT_SECRET_KEY", ""); raw != "" || o.DevMode {
		o.SecretKey = l.key("CONNECT_SECRET_KEY", raw, o.DevMode)
	}
	for _, k := range l.list("CONNECT_SECRET_KEY_PREVIOUS", nil) {
		if b := l.key("CONNECT_SECRET_KEY_PREVIOUS", k, false); b != nil {
			o.PreviousSecretKeys = append(o.PreviousSecretKeys, b)
		}
	}
	if len(l.errs) > 0 {
		return Ops{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(l.errs...))
	}
	return o, nil
}

// ParseTime reads an operator-given time: RFC 3339 (2026-03-04T05:06:07Z) or a
// date (2026-03-04, midnight UTC).
func ParseTime(raw string) (time.Time, error) {
	raw = strings.TrimSpace(raw)
	if t, err := time.Parse(time.RFC3339, raw); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, raw); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time like 2026-03-04T05:06:07Z nor a date like 2026-03-04", raw)
}

// timestamp reads an optional ParseTime value.
func (l *loader) timestamp(name string) time.Time {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return time.Time{}
	}
	t, err := ParseTime(raw)
	if err != nil {
		l.fail("%s: %v", name, err)
	}
	return t
}
