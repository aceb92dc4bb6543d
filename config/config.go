// Package config loads the one Config both binaries run on, from the environment
// names in the README's configuration table, with defaults and validation whose
// errors name the variable and say what is wrong.
//
// Load takes a lookup function instead of reading os.Getenv itself, so tests (and
// vendors embedding the service) can load a configuration without touching the
// process environment.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/webhook"
)

// DevSecretKey is the base64 key used for CONNECT_SECRET_KEY when DEV_MODE is on and
// no key is given. It is public (it is in this source file), so anything encrypted
// with it is readable by anyone: Load refuses it outside dev mode.
const DevSecretKey = "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE="

// DevAdminToken is the ADMIN_TOKEN scripts/dev sets. It is public too, so Load
// refuses it (and any token containing a placeholder such as "change-me")
// outside dev mode.
const DevAdminToken = "dev-admin-token-change-me"

// minTokenDistinct is the fewest distinct characters ADMIN_TOKEN and
// INTERNAL_TOKEN may have outside dev mode: "aaaaaaaaaaaaaaaa" is 16 characters
// long but guessable, while a random 16-character hex token has fewer than 6
// distinct characters about once in 25,000 draws.
const minTokenDistinct = 6

// DefaultProductHosts are the hostname globs a product baseUrl may have when
// CONNECT_PRODUCT_HOSTS is unset: Jira and Confluence Cloud. Atlassian's staging
// hosts (*.jira-dev.com), whose installs are signed by the staging key CDN, are
// opt-in: add them to CONNECT_PRODUCT_HOSTS on a development receiver only.
var DefaultProductHosts = []string{"*.atlassian.net", "*.jira.com"}

// Config is the whole configuration of the receiver and the worker. Each field says
// which variable sets it and its default.
type Config struct {
	// ListenAddr is LISTEN_ADDR, the receiver's listen address. Default ":8080".
	ListenAddr string
	// RedisURL is REDIS_URL, redis://[user:password@]host:port/db (rediss:// for TLS),
	// redis-sentinel://...?master=NAME or redis-cluster://host:port[,host:port...]
	// (see tasks.OpenRedis). Default "redis://127.0.0.1:6379/0".
	RedisURL string
	// DatabaseURL is DATABASE_URL, a PostgreSQL URL. Default
	// "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".
	DatabaseURL string

	// AppKey is CONNECT_APP_KEY, the app key in the descriptor and the iss of every
	// JWT the worker sends to the product. Required.
	AppKey string
	// AppName is CONNECT_APP_NAME, the name shown in the descriptor. Default: AppKey.
	AppName string
	// BaseURL is CONNECT_BASE_URL, the app's public base URL without a trailing
	// slash: the aud of signed installs and the base of the migration webhook.
	// Required.
	BaseURL string
	// AllowedBaseURLs is CONNECT_ALLOWED_BASE_URLS (comma separated): older app base
	// URLs still accepted as aud, because not every tenant runs the latest
	// descriptor. Default empty.
	AllowedBaseURLs []string
	// KeysCDNURL is CONNECT_KEYS_CDN_URL, the install public-key server base (keys
	// at {base}/{kid}). Default empty: Atlassian's CDN chosen by the product host.
	KeysCDNURL string
	// ProductHosts is CONNECT_PRODUCT_HOSTS (comma separated hostname globs, "*" is
	// one DNS label). Default DefaultProductHosts.
	ProductHosts []string
	// Scopes is CONNECT_SCOPES (comma separated), the descriptor's scopes.
	// Default "READ".
	Scopes []string
	// SecretKey is CONNECT_SECRET_KEY decoded: the 32-byte AES-256 key that
	// encrypts shared secrets at rest. Required outside dev mode.
	SecretKey []byte
	// PreviousSecretKeys is CONNECT_SECRET_KEY_PREVIOUS (comma separated base64):
	// keys that still decrypt secrets written before a key rotation. Default empty.
	PreviousSecretKeys [][]byte
	// JWTLeeway is CONNECT_JWT_LEEWAY, the clock skew allowed on exp. Default 30s.
	JWTLeeway time.Duration

	// MigrationFinalLabel is MIGRATION_FINAL_LABEL: the upload label after which the
	// bundled migration handler settles the transfer SUCCESS. Default "final".
	MigrationFinalLabel string

	// AdminToken is ADMIN_TOKEN, the bearer token guarding /monitoring and admin
	// routes. Empty disables those routes entirely.
	AdminToken string
	// MonitoringReadOnly is MONITORING_READONLY: when true the asynq UI cannot
	// delete, archive or run tasks. Default false.
	MonitoringReadOnly bool

	// InternalListenAddr is INTERNAL_LISTEN_ADDR, the receiver's internal
	// listener: /metrics, /monitoring and the /v1 API for the vendor's backend.
	// Keep it off the public internet. Default "127.0.0.1:8081"; "off" disables.
	InternalListenAddr string
	// InternalToken is INTERNAL_TOKEN, the bearer token of the /v1 API; at
	// least 32 characters. Empty disables the /v1 routes.
	InternalToken string
	// InternalURL is INTERNAL_URL, the base URL at which the vendor's backend
	// reaches the internal listener (the dataUrl and resultUrl of forwarded
	// uploads). Default: http:// and InternalListenAddr, a wildcard host
	// replaced by 127.0.0.1.
	InternalURL string
	// ForwardURL is FORWARD_URL: where the worker POSTs every event, signed per
	// Standard Webhooks. https, or http for a loopback host. Empty disables
	// forwarding.
	ForwardURL string
	// ForwardSecret is FORWARD_SECRET, the Standard Webhooks signing secret
	// (whsec_ + base64); required with ForwardURL.
	ForwardSecret string
	// ForwardTimeout is FORWARD_TIMEOUT, how long one delivery may take.
	// Default 30s.
	ForwardTimeout time.Duration
	// DescriptorFile is CONNECT_DESCRIPTOR_FILE, a JSON file merged into the
	// served descriptor (the app's modules, scopes, ...). Default none.
	DescriptorFile string

	// TrustedProxies is TRUSTED_PROXIES (comma separated CIDRs or IP
	// addresses): the reverse proxies whose X-Forwarded-For the receiver
	// believes for the client address it logs. Default empty: no forwarding
	// header is trusted and the TCP peer is the client.
	TrustedProxies []netip.Prefix

	// StaleSince is STALE_SINCE, an RFC 3339 time (or a date, midnight UTC):
	// when the last descriptor change was published. Once it is more than 24 h
	// ago the worker exports connectrelay_stale_tenants, the installed tenants
	// that sent no installed since. Default zero: the gauge is not computed.
	StaleSince time.Time

	// ForgeAppID is FORGE_APP_ID, the Forge app this service receives events
	// for, normalised to its ARI (ari:cloud:ecosystem::app/<uuid>; a bare
	// UUID is accepted). Set, it enables the /forge/* routes. Default empty.
	ForgeAppID string
	// ForgeJWKSURL is FORGE_JWKS_URL, where the keys of Forge Invocation
	// Tokens are fetched. https (http only for a loopback host, for the
	// simulator). Default forge.DefaultJWKSURL.
	ForgeJWKSURL string
	// ForgeEnvironments is FORGE_ENVIRONMENTS (comma separated): the
	// app.environment.type values accepted (PRODUCTION, STAGING,
	// DEVELOPMENT). Default "PRODUCTION".
	ForgeEnvironments []string
	// ForgeAPIHosts is FORGE_API_HOSTS (comma separated host names): the hosts
	// an invocation token's app.apiBaseUrl may name. The worker sends the app
	// system token there. Default "api.atlassian.com".
	ForgeAPIHosts []string
	// ForgeLifecycleModules, ForgePreUninstallModules and ForgeMigrationModules
	// are FORGE_LIFECYCLE_MODULE_KEYS, FORGE_PREUNINSTALL_MODULE_KEYS and
	// FORGE_MIGRATION_MODULE_KEYS (comma separated): when set, the module keys
	// a token of /forge/lifecycle, /forge/pre-uninstall or /forge/migration
	// must carry. Default empty: not checked.
	ForgeLifecycleModules, ForgePreUninstallModules, ForgeMigrationModules []string

	// WorkerMetricsAddr is WORKER_METRICS_ADDR, where the worker serves /metrics
	// and /healthz (it has no other HTTP side). Default "127.0.0.1:9091" (set
	// ":9091" to be scraped from another host or container); "off" disables.
	WorkerMetricsAddr string
	// WorkerConcurrency is WORKER_CONCURRENCY, tasks processed at once per worker
	// process. Default 10.
	WorkerConcurrency int
	// ShutdownTimeout is SHUTDOWN_TIMEOUT: how long a stopping process waits for
	// in-flight requests and tasks. Default 25s (under Kubernetes' 30 s grace).
	ShutdownTimeout time.Duration
	// LogLevel is LOG_LEVEL: debug, info, warn or error. Default info.
	LogLevel string
	// DevMode is DEV_MODE: allows the public DevSecretKey when CONNECT_SECRET_KEY
	// is unset, and DevAdminToken and other weak tokens. Never set it in
	// production. Default false.
	DevMode bool
}

// ErrInvalid is wrapped by every error Load returns, so callers can tell a
// configuration problem from other start-up failures.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the configuration through getenv (os.Getenv in the binaries) and
// validates it. All problems are reported at once, each naming its variable.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		ListenAddr:          l.str("LISTEN_ADDR", ":8080"),
		RedisURL:            l.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
		DatabaseURL:         l.str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		AppKey:              l.str("CONNECT_APP_KEY", ""),
		KeysCDNURL:          strings.TrimRight(l.str("CONNECT_KEYS_CDN_URL", ""), "/"),
		MigrationFinalLabel: l.str("MIGRATION_FINAL_LABEL", "final"),
		AdminToken:          l.str("ADMIN_TOKEN", ""),
		LogLevel:            strings.ToLower(l.str("LOG_LEVEL", "info")),
		DevMode:             l.boolean("DEV_MODE", false),
		MonitoringReadOnly:  l.boolean("MONITORING_READONLY", false),
		JWTLeeway:           l.duration("CONNECT_JWT_LEEWAY", 30*time.Second),
		ShutdownTimeout:     l.duration("SHUTDOWN_TIMEOUT", 25*time.Second),
		WorkerConcurrency:   l.integer("WORKER_CONCURRENCY", 10),
		WorkerMetricsAddr:   l.str("WORKER_METRICS_ADDR", "127.0.0.1:9091"),
		InternalListenAddr:  l.str("INTERNAL_LISTEN_ADDR", "127.0.0.1:8081"),
		InternalToken:       l.str("INTERNAL_TOKEN", ""),
		InternalURL:         l.str("INTERNAL_URL", ""),
		ForwardURL:          l.str("FORWARD_URL", ""),
		ForwardSecret:       l.str("FORWARD_SECRET", ""),
		ForwardTimeout:      l.duration("FORWARD_TIMEOUT", 30*time.Second),
		DescriptorFile:      l.str("CONNECT_DESCRIPTOR_FILE", ""),
		ProductHosts:        l.list("CONNECT_PRODUCT_HOSTS", DefaultProductHosts),
		Scopes:              l.list("CONNECT_SCOPES", []string{"READ"}),
	}
	c.AppName = l.str("CONNECT_APP_NAME", c.AppKey)
	l.forge(&c)
	c.TrustedProxies = l.prefixes("TRUSTED_PROXIES")
	c.StaleSince = l.timestamp("STALE_SINCE")
	if c.WorkerMetricsAddr == "off" {
		c.WorkerMetricsAddr = ""
	}
	if c.InternalListenAddr == "off" {
		c.InternalListenAddr = ""
	}
	if c.InternalToken != "" && len(c.InternalToken) < 32 {
		l.fail("INTERNAL_TOKEN must be at least 32 characters when set, got %d", len(c.InternalToken))
	}
	l.token("INTERNAL_TOKEN", c.InternalToken, c.DevMode)
	if c.InternalURL == "" {
		c.InternalURL = internalURL(c.InternalListenAddr)
	} else if u, err := url.Parse(c.InternalURL); err != nil || u.Host == "" || u.User != nil ||
		(u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		l.fail("INTERNAL_URL must be an absolute http(s) URL without credentials, query or fragment, got %q", redactURL(c.InternalURL))
	} else {
		c.InternalURL = strings.TrimRight(c.InternalURL, "/")
	}
	if c.ForwardURL != "" {
		if c.InternalToken == "" {
			l.fail("FORWARD_URL needs INTERNAL_TOKEN: your backend fetches migration data and reports upload results through the internal API")
		}
		if c.InternalURL == "" {
			l.fail("FORWARD_URL needs INTERNAL_URL when INTERNAL_LISTEN_ADDR is off: the URL at which your backend reaches the internal API")
		}
		u, err := url.Parse(c.ForwardURL)
		switch {
		case err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && u.Scheme != "http"):
			l.fail("FORWARD_URL must be an absolute https URL without credentials, got %q", redactURL(c.ForwardURL))
		case u.Scheme == "http" && !loopbackHost(u.Hostname()):
			l.fail("FORWARD_URL must be https (http only for a loopback host), got %q", redactURL(c.ForwardURL))
		}
		if c.ForwardSecret == "" {
			l.fail("FORWARD_SECRET is required with FORWARD_URL (whsec_ followed by a base64 key)")
		}
	}
	if c.ForwardSecret != "" {
		if _, err := webhook.ParseSecret(c.ForwardSecret); err != nil {
			l.fail("FORWARD_SECRET must be whsec_ followed by the standard base64 of a 24-64 byte key (%v)", err)
		}
	}
	if c.ForwardTimeout <= 0 || c.ForwardTimeout > 10*time.Minute {
		l.fail("FORWARD_TIMEOUT must be between 0s and 10m, got %s", c.ForwardTimeout)
	}

	if c.AppKey == "" {
		l.fail("CONNECT_APP_KEY is required (the app key of your Connect descriptor)")
	} else if !validAppKey(c.AppKey) {
		l.fail("CONNECT_APP_KEY must be 1-64 characters of letters, digits, '.', '_' or '-', got %q", c.AppKey)
	}
	c.BaseURL = l.baseURL("CONNECT_BASE_URL", l.str("CONNECT_BASE_URL", ""), true)
	for _, u := range l.list("CONNECT_ALLOWED_BASE_URLS", nil) {
		if v := l.baseURL("CONNECT_ALLOWED_BASE_URLS", u, true); v != "" {
			c.AllowedBaseURLs = append(c.AllowedBaseURLs, v)
		}
	}
	if c.KeysCDNURL != "" {
		if v := l.baseURL("CONNECT_KEYS_CDN_URL", c.KeysCDNURL, false); v != "" {
			// Install keys decide which installs are genuine: fetched over plain
			// http, anyone on the path could substitute their own.
			if u, err := url.Parse(v); err == nil && u.Scheme != "https" && !loopbackHost(u.Hostname()) {
				l.fail("CONNECT_KEYS_CDN_URL must be https (http only for a loopback host), got %q", v)
			}
		}
	}
	l.scheme("REDIS_URL", c.RedisURL, "redis", "rediss", "redis-sentinel", "redis-cluster")
	if strings.HasPrefix(c.RedisURL, "redis-sentinel:") && !strings.Contains(c.RedisURL, "master=") {
		l.fail("REDIS_URL: a redis-sentinel:// URL needs ?master=NAME (the Sentinels' name of the primary)")
	}
	l.scheme("DATABASE_URL", c.DatabaseURL, "postgres", "postgresql")
	if len(c.ProductHosts) == 0 {
		l.fail("CONNECT_PRODUCT_HOSTS must list at least one hostname glob")
	}
	for _, g := range c.ProductHosts {
		if strings.ContainsAny(g, "/:@ ") {
			l.fail("CONNECT_PRODUCT_HOSTS entries must be hostname globs like *.atlassian.net, got %q", g)
		} else if !literalDomain(g) {
			l.fail("CONNECT_PRODUCT_HOSTS entry %q is too broad: a '*' must be followed by at least two literal DNS labels, like *.atlassian.net", g)
		}
	}

	c.SecretKey = l.key("CONNECT_SECRET_KEY", l.str("CONNECT_SECRET_KEY", ""), c.DevMode)
	for _, k := range l.list("CONNECT_SECRET_KEY_PREVIOUS", nil) {
		if b := l.key("CONNECT_SECRET_KEY_PREVIOUS", k, false); b != nil {
			c.PreviousSecretKeys = append(c.PreviousSecretKeys, b)
		}
	}

	if c.MigrationFinalLabel == "" {
		l.fail("MIGRATION_FINAL_LABEL must not be empty")
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		l.fail("ADMIN_TOKEN must be at least 16 characters when set, got %d", len(c.AdminToken))
	}
	l.token("ADMIN_TOKEN", c.AdminToken, c.DevMode)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		l.fail("LOG_LEVEL must be one of debug, info, warn, error, got %q", c.LogLevel)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		l.fail("CONNECT_JWT_LEEWAY must be between 0s and 5m, got %s", c.JWTLeeway)
	}
	if c.WorkerConcurrency < 1 || c.WorkerConcurrency > 1000 {
		l.fail("WORKER_CONCURRENCY must be between 1 and 1000, got %d", c.WorkerConcurrency)
	}
	if c.ShutdownTimeout <= 0 {
		l.fail("SHUTDOWN_TIMEOUT must be positive, got %s", c.ShutdownTimeout)
	}
	if len(l.errs) > 0 {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(l.errs...))
	}
	return c, nil
}

// AppBaseURLs is BaseURL followed by AllowedBaseURLs: every base URL a request
// from the product may be addressed to.
func (c Config) AppBaseURLs() []string {
	return append([]string{c.BaseURL}, c.AllowedBaseURLs...)
}

// MigrationWebhookURL is the absolute URL registered with the product for App
// Migration Platform events.
func (c Config) MigrationWebhookURL() string { return c.BaseURL + MigrationWebhookPath }

// MigrationWebhookPath is the path, relative to BaseURL, of the migration webhook;
// the descriptor and the registration task both use it so they cannot disagree.
const MigrationWebhookPath = "/migration/events"

// ForgeEnvironmentTypes are the values FORGE_ENVIRONMENTS may hold.
var ForgeEnvironmentTypes = []string{"PRODUCTION", "STAGING", "DEVELOPMENT"}

// ForgeInsecure reports whether FORGE_JWKS_URL is plain http (a loopback
// host, checked by Load): the simulator's setup, in which the api hosts may be
// loopback http as well.
func (c Config) ForgeInsecure() bool { return strings.HasPrefix(c.ForgeJWKSURL, "http://") }

// forge reads the FORGE_* variables; every one is read whether or not
// FORGE_APP_ID is set, so that a typo is reported either way.
func (l *loader) forge(c *Config) {
	rawApp := l.str("FORGE_APP_ID", "")
	c.ForgeJWKSURL = l.str("FORGE_JWKS_URL", forge.DefaultJWKSURL)
	envs := l.list("FORGE_ENVIRONMENTS", []string{forge.DefaultEnvironment})
	c.ForgeAPIHosts = l.list("FORGE_API_HOSTS", []string{forge.DefaultAPIHost})
	c.ForgeLifecycleModules = l.list("FORGE_LIFECYCLE_MODULE_KEYS", nil)
	c.ForgePreUninstallModules = l.list("FORGE_PREUNINSTALL_MODULE_KEYS", nil)
	c.ForgeMigrationModules = l.list("FORGE_MIGRATION_MODULE_KEYS", nil)
	if rawApp != "" {
		id, err := forge.NormalizeAppID(strings.ToLower(rawApp))
		if err != nil {
			l.fail("FORGE_APP_ID must be the app ARI (ari:cloud:ecosystem::app/<uuid>) or its UUID, got %q", truncateValue(rawApp))
		}
		c.ForgeAppID = id
	}
	if u, err := url.Parse(c.ForgeJWKSURL); err != nil || u.Host == "" || u.User != nil ||
		!(u.Scheme == "https" || u.Scheme == "http" && loopbackHost(u.Hostname())) {
		l.fail("FORGE_JWKS_URL must be an absolute https URL (http only for a loopback host), got %q", redactURL(c.ForgeJWKSURL))
	}
	for _, e := range envs {
		e = strings.ToUpper(e)
		if !slices.Contains(ForgeEnvironmentTypes, e) {
			l.fail("FORGE_ENVIRONMENTS values must be among %s, got %q", strings.Join(ForgeEnvironmentTypes, ", "), truncateValue(e))
			continue
		}
		c.ForgeEnvironments = append(c.ForgeEnvironments, e)
	}
	for i, h := range c.ForgeAPIHosts {
		h = strings.ToLower(h)
		c.ForgeAPIHosts[i] = h
		if strings.ContainsAny(h, "/:@ *") || strings.HasSuffix(h, ".") || !strings.Contains(h, ".") && h != "localhost" {
			l.fail("FORGE_API_HOSTS entries must be exact host names like api.atlassian.com (no scheme, port, wildcard or trailing dot), got %q", truncateValue(h))
		}
	}
}

// truncateValue bounds a value quoted in an error.
func truncateValue(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

type loader struct {
	getenv func(string) string
	errs   []error
}

func (l *loader) fail(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) list(name string, def []string) []string {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	var out []string
	for _, p := range strings.Split(raw, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// prefixes reads a comma separated list of CIDRs or IP addresses (a single
// address is its /32 or /128), normalised to their network.
func (l *loader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, raw := range l.list(name, nil) {
		p, err := netip.ParsePrefix(raw)
		if err != nil {
			a, aerr := netip.ParseAddr(raw)
			if aerr != nil || a.Zone() != "" {
				l.fail("%s entries must be IP addresses or CIDRs like 10.0.0.0/8, got %q", name, raw)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

func (l *loader) boolean(name string, def bool) bool {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	v, err := strconv.ParseBool(raw)
	if err != nil {
		l.fail("%s must be true or false, got %q", name, raw)
		return def
	}
	return v
}

func (l *loader) integer(name string, def int) int {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	v, err := strconv.Atoi(raw)
	if err != nil {
		l.fail("%s must be a whole number, got %q", name, raw)
		return def
	}
	return v
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	raw := strings.TrimSpace(l.getenv(name))
	if raw == "" {
		return def
	}
	v, err := time.ParseDuration(raw)
	if err != nil {
		l.fail("%s must be a duration like 30s, got %q", name, raw)
		return def
	}
	return v
}

// baseURL validates an absolute http(s) URL without query or fragment and returns
// it without a trailing slash (aud comparison and path joining both assume that).
func (l *loader) baseURL(name, raw string, required bool) string {
	if raw == "" {
		if required {
			l.fail("%s must be an absolute http(s) URL, got %q", name, raw)
		}
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		l.fail("%s must be an absolute http(s) URL without credentials, query or fragment, got %q", name, raw)
		return ""
	}
	return strings.TrimRight(raw, "/")
}

func (l *loader) scheme(name, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err == nil {
		for _, s := range schemes {
			if u.Scheme == s && u.Host != "" {
				return
			}
		}
	}
	l.fail("%s must be a %s:// URL, got %q", name, schemes[0], redactURL(raw))
}

// key decodes a base64 32-byte key. The public DevSecretKey is refused outside
// dev mode by its decoded bytes, so no other spelling of it (unpadded, other
// padding bits, line breaks) gets through.
func (l *loader) key(name, raw string, dev bool) []byte {
	if raw == "" {
		if !dev {
			l.fail("%s is required: a base64-encoded 32-byte key (generate one with: openssl rand -base64 32)", name)
			return nil
		}
		raw = DevSecretKey
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(raw)
	}
	if err != nil || len(b) != 32 {
		l.fail("%s must be a base64-encoded 32-byte key, got %d bytes", name, len(b))
		return nil
	}
	if !dev && bytes.Equal(b, devKeyBytes()) {
		l.fail("%s is the public development key; generate a real one with: openssl rand -base64 32", name)
		return nil
	}
	return b
}

// devKeyBytes is DevSecretKey decoded.
func devKeyBytes() []byte {
	b, err := base64.StdEncoding.DecodeString(DevSecretKey)
	if err != nil {
		panic("config: DevSecretKey does not decode: " + err.Error())
	}
	return b
}

// token refuses, outside dev mode, a bearer token that is public (the dev
// script's, or a placeholder) or has too few distinct characters to be random.
// The error never contains the token.
func (l *loader) token(name, tok string, dev bool) {
	if tok == "" || dev {
		return
	}
	lower := strings.ToLower(tok)
	for _, known := range []string{DevAdminToken, "change-me", "changeme", "change_me"} {
		if strings.Contains(lower, known) {
			l.fail("%s is a known development token or placeholder; generate one with: openssl rand -hex 32", name)
			return
		}
	}
	distinct := map[rune]struct{}{}
	for _, r := range tok {
		distinct[r] = struct{}{}
	}
	if len(distinct) < minTokenDistinct {
		l.fail("%s has only %d distinct characters (at least %d needed), so it is guessable; generate one with: openssl rand -hex 32",
			name, len(distinct), minTokenDistinct)
	}
}

// literalDomain reports whether a CONNECT_PRODUCT_HOSTS glob pins a domain:
// after its last label containing '*' come at least two literal labels, so
// "*.atlassian.net" and "jira-*.example.com" pass while "*", "*.*", "*.com",
// "*atlassian.net" (which matches evilatlassian.net) and "jira.*.com" do not.
// A glob without '*' names hosts exactly and always passes.
func literalDomain(glob string) bool {
	labels := strings.Split(glob, ".")
	last := -1
	for i, label := range labels {
		if strings.Contains(label, "*") {
			last = i
		}
	}
	if last < 0 {
		return true
	}
	literal := labels[last+1:]
	if len(literal) < 2 {
		return false
	}
	for _, label := range literal {
		if label == "" {
			return false
		}
	}
	return true
}

// loopbackHost reports whether host names this machine.
func loopbackHost(host string) bool {
	switch strings.ToLower(host) {
	case "127.0.0.1", "::1", "localhost":
		return true
	}
	return false
}

// internalURL is the default INTERNAL_URL for the internal listener's address:
// "" when it is off, a wildcard host replaced by 127.0.0.1.
func internalURL(addr string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func validAppKey(k string) bool {
	if len(k) > 64 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// redactURL hides a password in a URL so that a configuration error never prints it.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
