package simulator

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

// descriptor is what the simulator reads of the app's Connect descriptor.
type descriptor struct {
	Key       string `json:"key"`
	BaseURL   string `json:"baseUrl"`
	Lifecycle struct {
		Installed   string `json:"installed"`
		Uninstalled string `json:"uninstalled"`
		Enabled     string `json:"enabled"`
		Disabled    string `json:"disabled"`
	} `json:"lifecycle"`
	APIMigrations struct {
		SignedInstall bool `json:"signed-install"`
	} `json:"apiMigrations"`
	CloudAppMigration struct {
		MigrationWebhookPath string `json:"migrationWebhookPath"`
	} `json:"cloudAppMigration"`
}

// descriptorPath is where a Connect app serves its descriptor.
const descriptorPath = "/atlassian-connect.json"

// readDescriptor fetches and checks the app's descriptor, as Atlassian does
// when the app is installed.
func (s *Simulator) readDescriptor(ctx context.Context) (descriptor, error) {
	var d descriptor
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.App+descriptorPath, nil)
	if err != nil {
		return d, fmt.Errorf("descriptor request: %w", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return d, fmt.Errorf("GET %s%s: %w (is the receiver running at --app?)", s.cfg.App, descriptorPath, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return d, fmt.Errorf("read descriptor: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return d, fmt.Errorf("GET %s%s = %d, want 200", s.cfg.App, descriptorPath, resp.StatusCode)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("descriptor is not JSON: %w", err)
	}
	var missing []string
	for name, v := range map[string]string{"key": d.Key, "baseUrl": d.BaseURL, "lifecycle.installed": d.Lifecycle.Installed,
		"lifecycle.uninstalled": d.Lifecycle.Uninstalled, "cloudAppMigration.migrationWebhookPath": d.CloudAppMigration.MigrationWebhookPath} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return d, fmt.Errorf("descriptor lacks %s", strings.Join(missing, ", "))
	}
	if _, err := url.Parse(d.BaseURL); err != nil {
		return d, fmt.Errorf("descriptor baseUrl %q: %w", d.BaseURL, err)
	}
	d.BaseURL = strings.TrimSuffix(d.BaseURL, "/")
	s.mu.Lock()
	s.desc = d
	s.mu.Unlock()
	return d, nil
}

// appKeyNow is the app key of the descriptor read last.
func (s *Simulator) appKeyNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desc.Key
}

// webhookURL is the migration webhook URL the app should register.
func (d descriptor) webhookURL() string { return d.BaseURL + d.CloudAppMigration.MigrationWebhookPath }

// signing says how an outgoing request is authenticated.
type signing struct {
	alg    string // "RS256", "HS256" or "" for no Authorization header
	issuer string
	secret string
	key    *rsa.PrivateKey // RS256 key; the simulator's when nil
	kid    string          // RS256 kid; the simulator's when empty
	token  string          // a ready token (replays); overrides the rest
}

// reply is the app's answer.
type reply struct {
	status int
	body   string
	err    error
	token  string // the token sent
}

// text renders the answer for the timeline and reasons.
func (r reply) text() string {
	if r.err != nil {
		return "no answer: " + r.err.Error()
	}
	return fmt.Sprintf("%d", r.status)
}

// send posts body to path of the app at --app, signed as sg says.
func (s *Simulator) send(ctx context.Context, d descriptor, path string, body any, sg signing) reply {
	return s.sendTo(ctx, s.cfg.App, d, path, body, sg)
}

// sendTo is send to the app at base URL app: one replica of several, all
// serving the descriptor's baseUrl (the tokens are minted for that).
func (s *Simulator) sendTo(ctx context.Context, app string, d descriptor, path string, body any, sg signing) reply {
	return s.post(ctx, app+path, body, func(req *http.Request) (string, error) {
		tok := sg.token
		if tok == "" && sg.alg != "" {
			var err error
			if tok, err = s.sign(req, d, sg); err != nil {
				return "", err
			}
		}
		if tok != "" {
			req.Header.Set("Authorization", "JWT "+tok)
		}
		return tok, nil
	})
}

// post sends body as JSON to target, after auth has authenticated the
// request (and returned the token it used), and reads the answer.
func (s *Simulator) post(ctx context.Context, target string, body any, auth func(*http.Request) (string, error)) reply {
	b, err := json.Marshal(body)
	if err != nil {
		return reply{err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return reply{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	tok, err := auth(req)
	if err != nil {
		return reply{err: err}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{err: err, token: tok}
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return reply{status: resp.StatusCode, body: strings.TrimSpace(string(rb)), token: tok}
}

// sign mints Atlassian's token for req: qsh relative to the app's baseUrl
// path, iat now, exp in 3 minutes; RS256 installs carry aud = the baseUrl and
// the kid of the key server.
func (s *Simulator) sign(req *http.Request, d descriptor, sg signing) (string, error) {
	base, err := url.Parse(d.BaseURL)
	if err != nil {
		return "", fmt.Errorf("app baseUrl: %w", err)
	}
	now := time.Now()
	if sg.alg == "RS256" {
		now = s.installIAT(sg.issuer)
	}
	claims := jwt.MapClaims{
		"iss": sg.issuer,
		"iat": now.Unix(),
		"exp": now.Add(3 * time.Minute).Unix(),
		"qsh": connect.QSH(req.Method, req.URL, base.EscapedPath()),
	}
	switch sg.alg {
	case "RS256":
		claims["aud"] = d.BaseURL
		j := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		j.Header["kid"] = s.kid
		if sg.kid != "" {
			j.Header["kid"] = sg.kid
		}
		key := s.key
		if sg.key != nil {
			key = sg.key
		}
		return j.SignedString(key)
	case "HS256":
		return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(sg.secret))
	default:
		return "", fmt.Errorf("simulator: unknown alg %q", sg.alg)
	}
}

// installIAT is the time a signed install of issuer is issued at: never in
// the same second as the previous one. Atlassian's install tokens of one
// tenant never share an iat (they are human actions seconds apart); two in one
// second would be byte-identical tokens, which the app rightly refuses as a
// replay when the bodies differ.
func (s *Simulator) installIAT(issuer string) time.Time {
	for {
		now := time.Now()
		s.mu.Lock()
		last, seen := s.lastIAT[issuer]
		if !seen || now.Unix() > last {
			s.lastIAT[issuer] = now.Unix()
			s.mu.Unlock()
			return now
		}
		s.mu.Unlock()
		time.Sleep(now.Truncate(time.Second).Add(time.Second + 5*time.Millisecond).Sub(now))
	}
}

// installBody is an installed (or uninstalled) body as Atlassian sends it.
func installBody(event, appKey, clientKey, baseURL, secret string) map[string]any {
	b := map[string]any{
		"key":            appKey,
		"clientKey":      clientKey,
		"serverVersion":  "100223",
		"pluginsVersion": "1001.0.0-SNAPSHOT",
		"baseUrl":        baseURL,
		"displayUrl":     baseURL,
		"productType":    "jira",
		"description":    "Atlassian JIRA at " + baseURL + " (simulated)",
		"eventType":      event,
	}
	if secret != "" {
		b["sharedSecret"] = secret
	}
	return b
}

// tenantView is what the internal API says of a tenant.
type tenantView struct {
	Tenant struct {
		ClientKey string `json:"clientKey"`
		BaseURL   string `json:"baseUrl"`
		Installed bool   `json:"installed"`
		Enabled   bool   `json:"enabled"`
		License   string `json:"license"`
		// Platform is connect, connect-on-forge or forge.
		Platform       string     `json:"platform"`
		InstallationID string     `json:"installationId"`
		Forge          *forgeView `json:"forge"`
	} `json:"tenant"`
	History []struct {
		Type    string   `json:"type"`
		Applied bool     `json:"applied"`
		Changes []string `json:"changes"`
	} `json:"history"`
}

// forgeView is what the internal API says of a tenant's Forge installation.
type forgeView struct {
	InstallationID   string     `json:"installationId"`
	AppVersion       string     `json:"appVersion"`
	SiteURL          string     `json:"siteUrl"`
	ClientKey        string     `json:"clientKey"`
	Installed        bool       `json:"installed"`
	InstalledAt      *time.Time `json:"installedAt"`
	UpgradedAt       *time.Time `json:"upgradedAt"`
	PreUninstalledAt *time.Time `json:"preUninstalledAt"`
}

// internalEnabled reports whether the checks through the internal API run.
func (s *Simulator) internalEnabled() bool { return s.cfg.Internal != "" && s.cfg.InternalToken != "" }

// readTenant reads a tenant through the app's internal API, by its clientKey
// or a Forge installationId.
func (s *Simulator) readTenant(ctx context.Context, clientKey string) (tenantView, error) {
	var v tenantView
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Internal+"/v1/tenants/"+url.PathEscape(clientKey), nil)
	if err != nil {
		return v, fmt.Errorf("internal API request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.InternalToken)
	resp, err := s.client.Do(req)
	if err != nil {
		return v, fmt.Errorf("internal API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("internal API GET /v1/tenants/%s = %d", clientKey, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
		return v, fmt.Errorf("internal API answer: %w", err)
	}
	return v, nil
}
