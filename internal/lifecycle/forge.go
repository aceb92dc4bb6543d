package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/tenant"
)

// ForgeStore is what ForgeInitialize needs of the tenant store;
// *tenant.Store implements it.
type ForgeStore interface {
	ForgeInstallation(ctx context.Context, installationID string) (connectrelay.ForgeInstallation, error)
	ForgeSystemToken(ctx context.Context, installationID string) (tenant.ForgeToken, error)
	SetForgeSiteURL(ctx context.Context, installationID, siteURL string) error
}

var _ ForgeStore = (*tenant.Store)(nil)

// ForgeConfig configures the worker's side of Forge installations.
type ForgeConfig struct {
	// Store reads installations and their system tokens. Required for
	// Forge work.
	Store ForgeStore
	// HTTP calls the product through apiBaseUrl; it must not follow
	// redirects to other hosts (the token goes with the request).
	HTTP *http.Client
	// APIHosts are the hosts apiBaseUrl may name (FORGE_API_HOSTS), checked
	// again before the token is sent.
	APIHosts []string
	// AllowInsecure permits http on a loopback host (the simulator).
	AllowInsecure bool
}

// forgeCallTimeout bounds one call to the product.
const forgeCallTimeout = 10 * time.Second

// ErrForgeAPIHost means a stored apiBaseUrl is not on an allowed host; the
// system token is not sent there.
var ErrForgeAPIHost = errors.New("forge apiBaseUrl is not on an allowed host")

// ForgeInitialize runs after a verified Forge installed or upgraded: it
// learns the site's URL from the product with the app system token when it
// is not known yet (Jira's serverInfo; other products are left unknown), then
// runs the vendor's Initializer with the tenant as stored (the Connect tenant
// of a Connect-on-Forge installation). Without a usable system token the URL
// stays unknown and the initialization goes on; an installation uninstalled
// since is skipped.
func (s *Service) ForgeInitialize(ctx context.Context, installationID string) error {
	return wrap(s.forgeInitialize(ctx, installationID))
}

func (s *Service) forgeInitialize(ctx context.Context, installationID string) error {
	fs := s.cfg.Forge.Store
	if fs == nil {
		return errors.New("forge: the worker has no Forge store configured")
	}
	fi, err := fs.ForgeInstallation(ctx, installationID)
	if err != nil {
		return err
	}
	if !fi.Installed {
		s.log.InfoContext(ctx, "forge installation uninstalled since the task was enqueued; skipped",
			slog.String("installation_id", installationID))
		return nil
	}
	if fi.SiteURL == "" {
		site, err := s.forgeSiteURL(ctx, fi)
		switch {
		case errors.Is(err, tenant.ErrNoSystemToken):
			s.log.WarnContext(ctx, "forge site URL not learnt: no usable app system token (enable auth.appSystemToken on the endpoint)",
				slog.String("installation_id", installationID), slog.String("error", err.Error()))
		case err != nil:
			return err
		case site != "":
			if err := fs.SetForgeSiteURL(ctx, installationID, site); err != nil {
				return fmt.Errorf("record site url: %w", err)
			}
		}
	}
	if s.cfg.Initializer != nil {
		tn, err := s.cfg.Tenants.Get(ctx, installationID)
		if err != nil {
			return err
		}
		if err := s.cfg.Initializer.InitializeTenant(ctx, &connectrelay.InitRequest{Tenant: tn, Product: s.cfg.Product}); err != nil {
			return &HookError{Hook: "initializer", Err: err}
		}
	}
	s.log.InfoContext(ctx, "forge installation initialized", slog.String("installation_id", installationID))
	return nil
}

// forgeSiteURL asks the product, as the installation, for the site's base
// URL. "" without error: the product has no known endpoint for it.
func (s *Service) forgeSiteURL(ctx context.Context, fi connectrelay.ForgeInstallation) (string, error) {
	if fi.Product != "jira" {
		// Confluence's equivalent through apiBaseUrl is not confirmed.
		return "", nil
	}
	tok, err := s.cfg.Forge.Store.ForgeSystemToken(ctx, fi.InstallationID)
	if err != nil {
		return "", err
	}
	endpoint, err := s.forgeEndpoint(tok.APIBaseURL, "/rest/api/3/serverInfo")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, forgeCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return "", fmt.Errorf("serverInfo request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	req.Header.Set("Accept", "application/json")
	client := s.cfg.Forge.HTTP
	if client == nil {
		client = &http.Client{Timeout: forgeCallTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("serverInfo of %s: %w", fi.InstallationID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("serverInfo of %s: read: %w", fi.InstallationID, err)
	}
	if resp.StatusCode != http.StatusOK {
		// 401/403 right after install are retried: the grant may not be
		// active yet.
		return "", fmt.Errorf("serverInfo of %s: status %d", fi.InstallationID, resp.StatusCode)
	}
	var info struct {
		BaseURL string `json:"baseUrl"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("serverInfo of %s: %w", fi.InstallationID, err)
	}
	u, err := url.Parse(info.BaseURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(s.cfg.Forge.AllowInsecure && u.Scheme == "http")) || len(info.BaseURL) > 2048 {
		s.log.WarnContext(ctx, "forge serverInfo baseUrl is not an absolute https URL; not recorded",
			slog.String("installation_id", fi.InstallationID), slog.String("base_url", truncateLog(info.BaseURL)))
		return "", nil
	}
	return strings.TrimRight(info.BaseURL, "/"), nil
}

// forgeEndpoint joins path to apiBaseURL after checking its host against
// APIHosts, the same rule the receiver applied to the token.
func (s *Service) forgeEndpoint(apiBaseURL, path string) (string, error) {
	u, err := url.Parse(apiBaseURL)
	if err != nil || u.User != nil || u.RawQuery != "" {
		return "", fmt.Errorf("%w: %q", ErrForgeAPIHost, truncateLog(apiBaseURL))
	}
	host := u.Hostname()
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
	}
	ok := slices.Contains(s.cfg.Forge.APIHosts, strings.ToLower(host)) &&
		(u.Scheme == "https" && u.Port() == "" || s.cfg.Forge.AllowInsecure && loopback && (u.Scheme == "http" || u.Scheme == "https"))
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrForgeAPIHost, truncateLog(apiBaseURL))
	}
	return strings.TrimRight(u.String(), "/") + path, nil
}

func truncateLog(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
