// Package simulator is a local Atlassian for connectctl simulate: an install
// public-key server with its own RSA key, and one fake product site per
// simulated tenant, all on one listener. It plays scenarios against a running
// app (receiver and worker): it sends what Atlassian sends (signed installs,
// lifecycle callbacks, App Migration Platform events), verifies every JWT the
// worker sends back (iss, qsh, exp and the tenant's current secret), records
// every call, and checks what the worker then did at the product, not only the
// receiver's status codes.
//
// Layout of the listener (ADDR is --listen):
//
//	/keys/{kid}                           the install public key (PEM)
//	/sites/{site}/rest/...                a tenant's product REST API (its baseUrl is http://ADDR/sites/{site})
//	/s3/{site}/{s3Key}                    the presigned download of an upload's data
//	/forge/jwks.json                      the JWKS of the key signing Forge Invocation Tokens
//	/api/ex/jira/{cloudId}/rest/...       api.atlassian.com for a Forge installation's system token
//	/app/migration/forge/v1/...           the Forge migration API, at the host of the installations' apiBaseUrl
//
// The simulator sees the app the way Atlassian does: through HTTP. Checks that
// need the app's own view (a tenant's recorded license, for one) read the
// internal API (/v1/tenants/{clientKey}) when an INTERNAL_TOKEN is given.
package simulator

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/forge/forgetest"
)

// DefaultListen is the simulator's default listen address.
const DefaultListen = "127.0.0.1:8090"

// DefaultApp is the default base URL of the app under test.
const DefaultApp = "http://127.0.0.1:8080"

// DefaultTimeout is how long a scenario waits for the worker to do something.
const DefaultTimeout = 15 * time.Second

// ErrConfig is wrapped by every configuration error of New and Env.
var ErrConfig = errors.New("simulator: configuration")

// Config configures a Simulator.
type Config struct {
	// App is the base URL requests to the app are sent to (--app).
	App string
	// Internal is the base URL of the app's internal listener, for the
	// checks that read the /v1 API; empty skips them.
	Internal string
	// InternalToken is the /v1 API's bearer token (INTERNAL_TOKEN); empty
	// skips the checks that need it.
	InternalToken string
	// Timeout bounds each wait for the worker; DefaultTimeout when zero.
	Timeout time.Duration
	// HTTPClient sends the requests to the app; a client with a 10 s timeout
	// when nil.
	HTTPClient *http.Client
	// Logger receives the simulator's own diagnostics; discarded when nil.
	Logger *slog.Logger
	// ForgeAppID is the Forge app the simulator signs FITs for (a bare
	// UUID or the app ARI, --forge-app-id): the app's FORGE_APP_ID.
	// DefaultForgeAppID when empty.
	ForgeAppID string
}

// Simulator is a running local Atlassian. It is safe for concurrent use.
type Simulator struct {
	cfg    Config
	key    *rsa.PrivateKey
	kid    string
	pem    []byte
	origin string // http://host:port of the listener
	srv    *http.Server
	served chan struct{}
	runID  string
	client *http.Client
	log    *slog.Logger
	// forge signs the FITs of Forge deliveries with this run's key.
	forge *forgetest.Issuer
	fapi  forgeAPI

	mu    sync.Mutex
	sites map[string]*site // by site name (the path segment)
	tl    *timeline        // the scenario running now, if any
	desc  descriptor       // the app's descriptor, read at the start of Run
	// lastIAT is the iat (Unix seconds) of each issuer's last signed install.
	lastIAT map[string]int64
	seq     int
}

// Env returns the environment the app needs to trust a simulator listening
// on listen and playing the Forge app forgeAppID (DefaultForgeAppID when
// empty): its key server and its host for Connect; for Forge the app id, the
// JWKS and the host of the simulated api.atlassian.com.
func Env(listen, forgeAppID string) ([]string, error) {
	origin, host, err := originOf(listen)
	if err != nil {
		return nil, err
	}
	app, err := forgeApp(forgeAppID)
	if err != nil {
		return nil, err
	}
	return []string{
		"CONNECT_KEYS_CDN_URL=" + origin + "/keys",
		"CONNECT_PRODUCT_HOSTS=" + host,
		"FORGE_APP_ID=" + app,
		"FORGE_JWKS_URL=" + origin + pathForgeJWKS,
		"FORGE_API_HOSTS=" + host,
	}, nil
}

// Env returns the environment the app needs to trust s (see Env).
func (s *Simulator) Env() []string {
	lines, err := Env(strings.TrimPrefix(s.origin, "http://"), s.ForgeAppID())
	if err != nil {
		panic(err) // the origin and app id were checked by New
	}
	return lines
}

// forgeApp normalises a --forge-app-id value to the app ARI.
func forgeApp(id string) (string, error) {
	if id == "" {
		return DefaultForgeAppID, nil
	}
	app, err := forge.NormalizeAppID(id)
	if err != nil {
		return "", fmt.Errorf("%w: --forge-app-id %q: want the app ARI (%s<uuid>) or its lowercase UUID", ErrConfig, id, forge.AppARIPrefix)
	}
	return app, nil
}

// originOf turns a listen address into the origin the simulator's URLs use:
// a wildcard or empty host becomes 127.0.0.1.
func originOf(listen string) (origin, host string, err error) {
	h, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("%w: --listen %q: %w", ErrConfig, listen, err)
	}
	if h == "" || h == "0.0.0.0" || h == "::" {
		h = "127.0.0.1"
	}
	if port == "" || port == "0" {
		return "", "", fmt.Errorf("%w: --listen %q: a fixed port is needed (the app is told the URL)", ErrConfig, listen)
	}
	return "http://" + net.JoinHostPort(h, port), h, nil
}

// New starts a simulator serving on ln. Close it when done.
func New(cfg Config, ln net.Listener) (*Simulator, error) {
	if cfg.App == "" {
		cfg.App = DefaultApp
	}
	u, err := url.Parse(cfg.App)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --app %q is not an http(s) URL", ErrConfig, cfg.App)
	}
	cfg.App = strings.TrimSuffix(cfg.App, "/")
	cfg.Internal = strings.TrimSuffix(cfg.Internal, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	origin, _, err := originOf(ln.Addr().String())
	if err != nil {
		return nil, err
	}
	app, err := forgeApp(cfg.ForgeAppID)
	if err != nil {
		return nil, err
	}
	fit, err := forgetest.NewIssuer(app)
	if err != nil {
		return nil, fmt.Errorf("simulator: forge issuer: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("simulator: generate install key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("simulator: marshal install key: %w", err)
	}
	s := &Simulator{
		cfg: cfg, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		origin: origin, runID: randomHex(3), sites: map[string]*site{}, lastIAT: map[string]int64{}, served: make(chan struct{}),
		client: cfg.HTTPClient, log: cfg.Logger, forge: fit, fapi: forgeAPI{tokens: map[string]*forgeInstallation{},
			transfers: map[string]*forgeTransfer{}, keys: map[string]*forgeTransfer{}},
	}
	s.kid = "connectctl-simulate/" + s.runID
	if s.client == nil {
		s.client = &http.Client{Timeout: 10 * time.Second}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /keys/{kid...}", s.serveKey)
	mux.HandleFunc("/sites/{site}/{rest...}", s.serveSite)
	mux.HandleFunc("GET /s3/{site}/{key...}", s.serveDownload)
	mux.HandleFunc("GET "+pathForgeJWKS, s.serveJWKS)
	mux.HandleFunc(pathForgeAPI+"/", s.serveForgeAPI)
	mux.HandleFunc(pathForgeMigrationAPI+"/", s.serveForgeAPI)
	// No write timeout: a --big download streams for as long as it takes.
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("simulator listener stopped", slog.String("error", err.Error()))
		}
	}()
	return s, nil
}

// Origin is the simulator's base URL (http://ADDR).
func (s *Simulator) Origin() string { return s.origin }

// KeyID is the kid of the simulator's install key.
func (s *Simulator) KeyID() string { return s.kid }

// Close stops the listener, waiting up to ctx for open calls.
func (s *Simulator) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.served
	if err != nil {
		return fmt.Errorf("simulator: shut down: %w", err)
	}
	return nil
}

func (s *Simulator) serveKey(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	if kid != s.kid {
		s.event(actorApp, "key server", "GET /keys/"+kid, http.StatusNotFound, "not the simulator's kid")
		http.NotFound(w, r)
		return
	}
	s.event(actorApp, "key server", "GET /keys/"+kid, http.StatusOK, "")
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.pem)
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}
