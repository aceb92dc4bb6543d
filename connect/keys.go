package connect

import (
	"container/list"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// KeyProvider returns the public key Atlassian signed an install with. The
// InstallVerifier calls it only with a kid that passed ValidKeyID and a
// productBaseURL that passed the HostPolicy. Errors must wrap ErrUnknownKey
// (the key does not exist: 401), ErrKeyUnavailable (could not find out: 503)
// or ErrKeyFetchLimited (did not ask, over the fetch budget: 503); any other
// error is treated as ErrKeyUnavailable.
type KeyProvider interface {
	PublicKey(ctx context.Context, kid, productBaseURL string) (*rsa.PublicKey, error)
}

// KeyServerConfig configures a KeyServer. Zero values take the documented
// defaults.
type KeyServerConfig struct {
	// BaseURL is CONNECT_KEYS_CDN_URL: when set, keys are fetched from
	// {BaseURL}/{kid} only. Empty selects Atlassian's primary and fallback CDNs
	// by product host (docs/protocol.md#signed-installs; KeyServerBases).
	BaseURL string
	// HTTPClient performs the fetches; when nil, a client with bounded dial,
	// TLS and header timeouts that follows at most 3 redirects and never
	// downgrades from https.
	HTTPClient *http.Client
	// Timeout bounds each fetch (each CDN attempt); 2 s when zero.
	Timeout time.Duration
	// TTL is how long a key is cached; 24 h when zero. Keys are immutable
	// per kid (Atlassian rotates by issuing a new kid), so a long TTL is safe.
	TTL time.Duration
	// NegativeTTL is how long "no such key" (ErrUnknownKey) is cached, so a
	// flood of installs with an unknown kid does not become a flood of CDN
	// requests; 30 s when zero. Unavailability is never cached.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache of keys (least recently used entries are
	// evicted); 512 when zero.
	MaxEntries int
	// NegativeMaxEntries bounds the separate cache of "no such key" answers,
	// so that a flood of unknown kids can never evict a genuine key; 1024
	// when zero.
	NegativeMaxEntries int
	// FetchRate is how many fetches of kids not in either cache may start per
	// second, on average (a token bucket shared by all kids); FetchBurst is the
	// bucket's size. Beyond it PublicKey answers ErrKeyFetchLimited (503)
	// without a fetch, so installs with fresh kids cannot turn into a flood
	// of key server requests. Defaults DefaultKeyFetchRate and
	// DefaultKeyFetchBurst when zero; negative values are treated as zero.
	FetchRate  float64
	FetchBurst int
	// Now is the clock of the cache; time.Now when nil.
	Now func() time.Time
}

// Defaults of KeyServerConfig.
const (
	DefaultKeyFetchTimeout = 2 * time.Second
	DefaultKeyTTL          = 24 * time.Hour
	DefaultKeyNegativeTTL  = 30 * time.Second
	DefaultKeyCacheEntries = 512
	// DefaultKeyNegativeEntries bounds the cache of unknown kids.
	DefaultKeyNegativeEntries = 1024
	// DefaultKeyFetchRate and DefaultKeyFetchBurst are the token bucket of
	// fetches of uncached kids: Atlassian rotates install keys rarely, so a
	// real receiver needs a handful of fetches a day.
	DefaultKeyFetchRate  = 10.0
	DefaultKeyFetchBurst = 20
)

// maxKeyBody bounds a key server response: an RSA 4096 PEM is under 1 KiB.
const maxKeyBody = 64 << 10

// maxKeyIDLength bounds a kid; Atlassian's are UUIDs (36 bytes).
const maxKeyIDLength = 256

// KeyServer is the production KeyProvider: it fetches install public keys
// from Atlassian's key CDN and caches them by kid. Concurrent misses for one
// kid are collapsed into a single fetch. It is safe for concurrent use.
type KeyServer struct {
	client      *http.Client
	timeout     time.Duration
	ttl         time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	// bases chooses the key servers for a product base URL, in order; tests
	// replace it to point the CDN table at local servers.
	bases func(productBaseURL string) []string

	cache    *keyCache // keys only
	negative *keyCache // ErrUnknownKey answers only
	fetches  *tokenBucket
	flight   singleflight.Group
}

var _ KeyProvider = (*KeyServer)(nil)

// NewKeyServer returns a KeyServer with cfg's defaults filled in.
func NewKeyServer(cfg KeyServerConfig) *KeyServer {
	ks := &KeyServer{
		client:      cfg.HTTPClient,
		timeout:     cfg.Timeout,
		ttl:         cfg.TTL,
		negativeTTL: cfg.NegativeTTL,
		now:         cfg.Now,
	}
	if ks.client == nil {
		ks.client = defaultKeyClient()
	}
	if ks.timeout <= 0 {
		ks.timeout = DefaultKeyFetchTimeout
	}
	if ks.ttl <= 0 {
		ks.ttl = DefaultKeyTTL
	}
	if ks.negativeTTL <= 0 {
		ks.negativeTTL = DefaultKeyNegativeTTL
	}
	if ks.now == nil {
		ks.now = time.Now
	}
	maxEntries := cfg.MaxEntries
	if maxEntries <= 0 {
		maxEntries = DefaultKeyCacheEntries
	}
	ks.cache = newKeyCache(maxEntries)
	negEntries := cfg.NegativeMaxEntries
	if negEntries <= 0 {
		negEntries = DefaultKeyNegativeEntries
	}
	ks.negative = newKeyCache(negEntries)
	rate, burst := cfg.FetchRate, cfg.FetchBurst
	if rate <= 0 {
		rate = DefaultKeyFetchRate
	}
	if burst <= 0 {
		burst = DefaultKeyFetchBurst
	}
	ks.fetches = newTokenBucket(rate, burst, ks.now())
	if base := strings.TrimRight(cfg.BaseURL, "/"); base != "" {
		ks.bases = func(string) []string { return []string{base} }
	} else {
		ks.bases = KeyServerBases
	}
	return ks
}

func defaultKeyClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   2 * time.Second,
			ResponseHeaderTimeout: 2 * time.Second,
			MaxIdleConns:          16,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: keyRedirectPolicy,
	}
}

// keyRedirectPolicy follows at most 3 redirects and never from https to
// another scheme: a key fetched over plain http could be swapped in transit,
// and with it every signed install.
func keyRedirectPolicy(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing redirect from https to %s", req.URL.Scheme)
	}
	return nil
}

// Atlassian's install key servers (docs/protocol.md#signed-installs, from atlassian-connect-
// express 11.5.3), by environment.
const (
	keysProdPrimary     = "https://asap-distribution.us-west-2.prod.atl-asap.net"
	keysProdFallback    = "https://connect-install-keys.atlassian.com"
	keysStagingPrimary  = "https://asap-distribution.us-west-2.staging.atl-asap.net"
	keysStagingFallback = "https://cs-migrations--cdn.us-east-1.staging.public.atl-paas.net"
	keysFedProdPrimary  = "https://asap-distribution.us-west-2.prod.atl-auth-us-gov-mod.net"
	keysFedProdFallback = "https://cs-migrations--fedrampcdn.us-east-1.prod.cdn.atlassian-us-gov-mod.com"
	keysFedStgPrimary   = "https://asap-distribution.us-west-2.staging.atl-auth-us-gov-mod.net"
	keysFedStgFallback  = "https://cs-migrations--fedrampcdn.us-east-1.staging.cdn.atlassian-us-gov-mod.com"
)

// Install key environments: which of Atlassian's key server families signs a
// product's installs. A tenant's environment never changes, so an install of
// an existing tenant from another environment is refused (a key the staging
// CDN serves must never rotate a production tenant's secret).
const (
	KeyEnvProduction     = "production"
	KeyEnvStaging        = "staging"
	KeyEnvFedRAMP        = "fedramp"
	KeyEnvFedRAMPStaging = "fedramp-staging"
)

// KeyEnvironment returns the install key environment of a product base URL,
// chosen by its host (docs/protocol.md#signed-installs): staging for
// *.jira-dev.com, FedRAMP (production or staging) for their domains, and
// production for *.atlassian.net, *.jira.com and anything else.
func KeyEnvironment(productBaseURL string) string {
	host := ""
	if u, err := url.Parse(productBaseURL); err == nil {
		host = strings.ToLower(u.Hostname())
	}
	switch {
	case hasDomain(host, "jira-dev.com"):
		return KeyEnvStaging
	case hasDomain(host, "atlassian-us-gov-mod.net"):
		return KeyEnvFedRAMP
	case hasDomain(host, "atlassian-stg-fedm.net"):
		return KeyEnvFedRAMPStaging
	default:
		return KeyEnvProduction
	}
}

// KeyServerBases returns the install key servers to try for a product base
// URL, primary first, by its KeyEnvironment: production's for *.atlassian.net
// and *.jira.com, staging's, or FedRAMP's, and the documented
// connect-install-keys server alone for any other host.
func KeyServerBases(productBaseURL string) []string {
	host := ""
	if u, err := url.Parse(productBaseURL); err == nil {
		host = strings.ToLower(u.Hostname())
	}
	switch KeyEnvironment(productBaseURL) {
	case KeyEnvStaging:
		return []string{keysStagingPrimary, keysStagingFallback}
	case KeyEnvFedRAMP:
		return []string{keysFedProdPrimary, keysFedProdFallback}
	case KeyEnvFedRAMPStaging:
		return []string{keysFedStgPrimary, keysFedStgFallback}
	}
	if hasDomain(host, "atlassian.net") || hasDomain(host, "jira.com") {
		return []string{keysProdPrimary, keysProdFallback}
	}
	return []string{keysProdFallback}
}

// hasDomain reports whether host is a strict subdomain of domain.
func hasDomain(host, domain string) bool {
	return strings.HasSuffix(host, "."+domain)
}

// ValidKeyID reports whether kid is safe to put in a key server URL: only
// A-Z a-z 0-9 '_' '-' '/', no "..", no empty path segment, at most 256 bytes.
// The install verifier refuses any other kid before a URL is built, so a
// token cannot steer the fetch elsewhere ("../", "?", "#", "%2e").
func ValidKeyID(kid string) bool {
	if kid == "" || len(kid) > maxKeyIDLength {
		return false
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '/') {
			return false
		}
	}
	return !strings.Contains(kid, "..") && !strings.HasPrefix(kid, "/") &&
		!strings.HasSuffix(kid, "/") && !strings.Contains(kid, "//")
}

// PublicKey returns the install public key kid for a product, from the cache
// or from the key servers.
func (ks *KeyServer) PublicKey(ctx context.Context, kid, productBaseURL string) (*rsa.PublicKey, error) {
	if !ValidKeyID(kid) {
		return nil, fmt.Errorf("%w: %q", ErrBadKeyID, truncate(kid, 64))
	}
	bases := ks.bases(productBaseURL)
	if len(bases) == 0 {
		return nil, fmt.Errorf("%w: no key server for product %q", ErrKeyUnavailable, truncate(productBaseURL, 256))
	}
	// Keyed by the primary server too: a kid means one key per environment.
	cacheKey := bases[0] + "\x00" + kid
	if e, ok := ks.cache.get(cacheKey, ks.now()); ok {
		return e.key, nil
	}
	if e, ok := ks.negative.get(cacheKey, ks.now()); ok {
		return nil, e.err
	}

	ch := ks.flight.DoChan(cacheKey, func() (any, error) {
		// One token per fetch, not per caller: callers of one kid share it.
		if !ks.fetches.allow(ks.now()) {
			return nil, fmt.Errorf("%w: kid %q not cached and the fetch budget is spent", ErrKeyFetchLimited, truncate(kid, 64))
		}
		// The fetch serves every waiting caller, so it must not die with the
		// first caller's context; it is bounded by the per-attempt timeout.
		key, err := ks.fetch(context.WithoutCancel(ctx), kid, bases)
		switch {
		case err == nil:
			ks.cache.put(cacheKey, keyEntry{key: key, expires: ks.now().Add(ks.ttl)})
		case errors.Is(err, ErrUnknownKey):
			ks.negative.put(cacheKey, keyEntry{err: err, expires: ks.now().Add(ks.negativeTTL)})
		}
		return key, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*rsa.PublicKey), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for key %q: %w", ErrKeyUnavailable, kid, ctx.Err())
	}
}

// fetch tries each key server in order. It returns the first key found;
// ErrUnknownKey only when every server definitively said "no such key";
// ErrKeyUnavailable when none had it and at least one could not answer.
func (ks *KeyServer) fetch(ctx context.Context, kid string, bases []string) (*rsa.PublicKey, error) {
	var errs []error
	unavailable := false
	for _, base := range bases {
		key, err := ks.fetchOne(ctx, base, kid)
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, ErrUnknownKey) {
			unavailable = true
		}
		errs = append(errs, err)
	}
	if unavailable {
		return nil, fmt.Errorf("%w: %w", ErrKeyUnavailable, errors.Join(errs...))
	}
	return nil, errors.Join(errs...)
}

// fetchOne GETs {base}/{kid} under the per-fetch timeout and classifies the
// answer: 200 with a PEM RSA key is the key; 429, 5xx, transport errors and
// unusable bodies are ErrKeyUnavailable; any other status is ErrUnknownKey.
func (ks *KeyServer) fetchOne(ctx context.Context, base, kid string) (*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, ks.timeout)
	defer cancel()
	u := strings.TrimRight(base, "/") + "/" + kid
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: build request for %s: %v", ErrKeyUnavailable, u, err)
	}
	req.Header.Set("Accept", "application/x-pem-file, text/plain, */*")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrKeyUnavailable, u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		drain(resp.Body)
		return nil, fmt.Errorf("%w: GET %s: %s", ErrKeyUnavailable, u, resp.Status)
	default:
		drain(resp.Body)
		return nil, fmt.Errorf("%w: GET %s: %s", ErrUnknownKey, u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: read body: %v", ErrKeyUnavailable, u, err)
	}
	if len(body) > maxKeyBody {
		return nil, fmt.Errorf("%w: GET %s: body larger than %d bytes", ErrKeyUnavailable, u, maxKeyBody)
	}
	key, err := ParsePublicKeyPEM(body)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrKeyUnavailable, u, err)
	}
	return key, nil
}

func drain(r io.Reader) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 4<<10))
}

// MinRSAKeyBits is the smallest install key modulus accepted.
const MinRSAKeyBits = 2048

// ParsePublicKeyPEM parses an RSA public key as served by the install key
// CDN. It is deliberately tolerant of transport damage that broke other
// implementations (ACSB 2.2.0 choked on line feeds): LF or CRLF line endings,
// surrounding whitespace, a body on one line, and literal "\n" escapes. It
// accepts PKIX "PUBLIC KEY" (what the CDN serves) and PKCS#1 "RSA PUBLIC KEY",
// refuses anything else (certificates, private keys, non-RSA keys) and moduli
// under MinRSAKeyBits.
func ParsePublicKeyPEM(b []byte) (*rsa.PublicKey, error) {
	s := strings.TrimSpace(string(b))
	s = strings.ReplaceAll(s, `\r\n`, "\n")
	s = strings.ReplaceAll(s, `\n`, "\n")
	typ, der, err := pemBody(s)
	if err != nil {
		return nil, err
	}
	var key *rsa.PublicKey
	switch typ {
	case "PUBLIC KEY":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("connect: parse PKIX public key: %w", err)
		}
		var ok bool
		if key, ok = pub.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("connect: public key is %T, not RSA", pub)
		}
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("connect: parse PKCS#1 public key: %w", err)
		}
	default:
		return nil, fmt.Errorf("connect: PEM block %q is not a public key", typ)
	}
	if n := key.N.BitLen(); n < MinRSAKeyBits {
		return nil, fmt.Errorf("connect: RSA key has %d bits, fewer than %d", n, MinRSAKeyBits)
	}
	return key, nil
}

// pemBody returns the type and DER bytes of the first PEM block of s, first
// with encoding/pem, then by hand for bodies whose line structure was lost.
func pemBody(s string) (string, []byte, error) {
	if block, _ := pem.Decode([]byte(s)); block != nil {
		return block.Type, block.Bytes, nil
	}
	const begin, dashes = "-----BEGIN ", "-----"
	i := strings.Index(s, begin)
	if i < 0 {
		return "", nil, errors.New("connect: no PEM block")
	}
	rest := s[i+len(begin):]
	typ, rest, ok := strings.Cut(rest, dashes)
	if !ok {
		return "", nil, errors.New("connect: unterminated PEM header")
	}
	body, _, ok := strings.Cut(rest, "-----END "+typ+dashes)
	if !ok {
		return "", nil, fmt.Errorf("connect: no END line for PEM block %q", typ)
	}
	body = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, body)
	der, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return "", nil, fmt.Errorf("connect: PEM block %q is not base64: %w", typ, err)
	}
	return typ, der, nil
}

// tokenBucket is a token bucket on an injected clock: tokens accrue at rate
// per second up to burst, and each allowed event takes one.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes a token if one is available at now.
func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// keyEntry is a cached answer: a key, or ErrUnknownKey.
type keyEntry struct {
	key     *rsa.PublicKey
	err     error
	expires time.Time
}

// keyCache is a bounded LRU of keyEntry with per-entry expiry.
type keyCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recently used; values are *cacheItem
	items map[string]*list.Element
}

type cacheItem struct {
	key   string
	entry keyEntry
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (c *keyCache) get(k string, now time.Time) (keyEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return keyEntry{}, false
	}
	it := el.Value.(*cacheItem)
	if !now.Before(it.entry.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return keyEntry{}, false
	}
	c.order.MoveToFront(el)
	return it.entry, true
}

func (c *keyCache) put(k string, e keyEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*cacheItem).entry = e
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&cacheItem{key: k, entry: e})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheItem).key)
	}
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
