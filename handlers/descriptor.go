package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// buildDescriptor renders the Connect descriptor once, from the configuration and
// the route constants, so the lifecycle paths Atlassian calls are always the ones
// this server serves.
func (s *Server) buildDescriptor() ([]byte, error) {
	cfg := s.d.Config
	d := map[string]any{
		"key":            cfg.AppKey,
		"name":           cfg.AppName,
		"baseUrl":        cfg.BaseURL,
		"authentication": map[string]any{"type": "jwt"},
		"scopes":         cfg.Scopes,
		"modules":        map[string]any{},
	}
	if s.d.Descriptor != nil {
		s.d.Descriptor(d)
	}
	// Set last, so a vendor's descriptor hook cannot break the protocol parts:
	// the key and baseUrl are what signed installs are checked against.
	d["key"], d["baseUrl"] = cfg.AppKey, cfg.BaseURL
	d["authentication"] = map[string]any{"type": "jwt"}
	d["lifecycle"] = map[string]any{
		"installed":   PathInstalled,
		"uninstalled": PathUninstalled,
		"enabled":     PathEnabled,
		"disabled":    PathDisabled,
	}
	migrations, _ := d["apiMigrations"].(map[string]any)
	if migrations == nil {
		migrations = map[string]any{}
	}
	migrations["signed-install"] = true
	d["apiMigrations"] = migrations
	d["cloudAppMigration"] = map[string]any{"migrationWebhookPath": PathMigrationEvents}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("handlers: render descriptor: %w", err)
	}
	return b, nil
}

func (s *Server) serveDescriptor(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, "application/json", s.descriptor)
}
