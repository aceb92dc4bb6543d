package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
)

// ForgeStore is what ForgeInitialize needs of the tenant store;
// *tenant.Store implements it.
type ForgeStore interface {
	ForgeInstallation(ctx context.Context, installationID string) (connectrelay.ForgeInstallation, error)
	SetForgeSiteURL(ctx context.Context, installationID, siteURL string) error
}

// ForgeAPI calls a product as a Forge installation, with its app system
// token, on its verified apiBaseUrl; *product.ForgeAMP implements it.
type ForgeAPI interface {
	Do(ctx context.Context, installationID string, req product.Request, out any) error
}

var (
	_ ForgeStore = (*tenant.Store)(nil)
	_ ForgeAPI   = (*product.ForgeAMP)(nil)
)

// ForgeConfig configures the worker's side of Forge installations.
type ForgeConfig struct {
	// Store reads and updates installations. Required for Forge work.
	Store ForgeStore
	// API calls the product as an installation. Required for Forge work.
	API ForgeAPI
}

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
	if fs == nil || s.cfg.Forge.API == nil {
		return errors.New("forge: the worker has no Forge store or API client configured")
	}
	fi, err := fs.ForgeInstallation(ctx, installationID)
	if err != nil {
		return err
	}
	if !fi.Installed || fi.PreUninstalledAt != nil {
		s.log.InfoContext(ctx, "forge installation uninstalled or about to be since the task was enqueued; skipped",
			slog.String("installation_id", installationID))
		return nil
	}
	if fi.SiteURL == "" {
		site, err := s.forgeSiteURL(ctx, fi)
		switch {
		case errors.Is(err, product.ErrNoSystemToken):
			s.log.WarnContext(ctx, "forge site URL not learnt: no usable app system token (enable auth.appSystemToken on the endpoint)",
				slog.String("installation_id", installationID), slog.String("error", err.Error()))
		case final(err):
			// The site URL is information, not a precondition: a final answer
			// (a missing scope, a host no longer allowed) must not block the
			// vendor's initialization.
			s.log.WarnContext(ctx, "forge site URL not learnt: the product refused serverInfo",
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

// serverInfoRoute is the route of Jira's serverInfo under an apiBaseUrl.
const serverInfoRoute = "/rest/api/3/serverInfo"

// forgeSiteURL asks the product, as the installation, for the site's base
// URL. "" without error: the product has no known endpoint for it, or its
// answer is not an https URL (http only on a loopback host). A 401 right after install (the grant may not be
// active yet) wraps product.ErrNoSystemToken; a 403 is retried.
func (s *Service) forgeSiteURL(ctx context.Context, fi connectrelay.ForgeInstallation) (string, error) {
	if fi.Product != "jira" {
		// Confluence's equivalent through apiBaseUrl is not confirmed.
		return "", nil
	}
	u, err := url.Parse(fi.APIBaseURL)
	if err != nil {
		return "", fmt.Errorf("apiBaseUrl of %s: %w", fi.InstallationID, err)
	}
	var info struct {
		BaseURL string `json:"baseUrl"`
	}
	req := product.Request{Path: strings.TrimRight(u.EscapedPath(), "/") + serverInfoRoute, Route: "{apiBaseUrl}" + serverInfoRoute}
	if err := s.cfg.Forge.API.Do(ctx, fi.InstallationID, req, &info); err != nil {
		return "", fmt.Errorf("serverInfo of %s: %w", fi.InstallationID, err)
	}
	site, err := url.Parse(info.BaseURL)
	if err != nil || !(site.Scheme == "https" || site.Scheme == "http" && loopbackHost(site.Hostname())) ||
		site.Host == "" || site.User != nil || len(info.BaseURL) > 2048 {
		s.log.WarnContext(ctx, "forge serverInfo baseUrl is not an absolute https URL; not recorded",
			slog.String("installation_id", fi.InstallationID), slog.String("base_url", truncateLog(info.BaseURL)))
		return "", nil
	}
	return strings.TrimRight(info.BaseURL, "/"), nil
}

// loopbackHost reports a loopback host: a site URL may be plain http there
// (the simulator's sites).
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func truncateLog(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
