package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

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
	if cfg.DescriptorFile != "" {
		file, err := readDescriptorFile(cfg.DescriptorFile, s.owned())
		if err != nil {
			return nil, err
		}
		for k, v := range file {
			d[k] = v
		}
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
	cam, _ := d["cloudAppMigration"].(map[string]any)
	if cam == nil {
		cam = map[string]any{}
	}
	cam["migrationWebhookPath"] = PathMigrationEvents
	d["cloudAppMigration"] = cam
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("handlers: render descriptor: %w", err)
	}
	return b, nil
}

// maxDescriptorFile bounds CONNECT_DESCRIPTOR_FILE.
const maxDescriptorFile = 1 << 20

// ownedValues are the descriptor members the service sets, as it sets them.
type ownedValues struct {
	key, baseURL string
	lifecycle    map[string]string
}

func (s *Server) owned() ownedValues {
	return ownedValues{key: s.d.Config.AppKey, baseURL: s.d.Config.BaseURL, lifecycle: map[string]string{
		"installed": PathInstalled, "uninstalled": PathUninstalled, "enabled": PathEnabled, "disabled": PathDisabled,
	}}
}

// readDescriptorFile reads the vendor's descriptor (CONNECT_DESCRIPTOR_FILE):
// one JSON object, at most 1 MiB. The members the service owns may be present
// only with the values it serves (so a vendor's existing descriptor can be used
// as it is); any other value is an error naming the member. apiMigrations and
// cloudAppMigration may carry further members of the vendor's, which are kept.
func readDescriptorFile(path string, own ownedValues) (map[string]any, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("CONNECT_DESCRIPTOR_FILE %s: %s", path, fmt.Sprintf(format, args...))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("CONNECT_DESCRIPTOR_FILE: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDescriptorFile+1))
	if err != nil {
		return nil, fmt.Errorf("CONNECT_DESCRIPTOR_FILE: %w", err)
	}
	if len(b) > maxDescriptorFile {
		return nil, fail("larger than %d bytes", maxDescriptorFile)
	}
	var d map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil || d == nil {
		return nil, fail("not a JSON object (%v)", err)
	}
	if dec.More() {
		return nil, fail("more than one JSON value")
	}
	if v, ok := d["key"]; ok && v != own.key {
		return nil, fail(`"key" is %q but CONNECT_APP_KEY is %q: remove it or make them equal`, v, own.key)
	}
	if v, ok := d["baseUrl"]; ok {
		if str, _ := v.(string); strings.TrimRight(str, "/") != own.baseURL {
			return nil, fail(`"baseUrl" is %q but CONNECT_BASE_URL is %q: remove it or make them equal`, v, own.baseURL)
		}
	}
	if v, ok := d["authentication"]; ok {
		a, _ := v.(map[string]any)
		if t, _ := a["type"].(string); len(a) != 1 || !strings.EqualFold(t, "jwt") {
			return nil, fail(`"authentication" must be {"type": "jwt"} or absent: the service verifies Connect JWTs`)
		}
	}
	if v, ok := d["lifecycle"]; ok {
		l, isObj := v.(map[string]any)
		if !isObj {
			return nil, fail(`"lifecycle" must be an object or absent`)
		}
		for name, path := range l {
			want, known := own.lifecycle[name]
			if !known || path != want {
				return nil, fail(`"lifecycle.%s" is %v; the service serves the lifecycle callbacks at %v: remove it`, name, path, own.lifecycle)
			}
		}
	}
	if v, ok := d["apiMigrations"]; ok {
		m, isObj := v.(map[string]any)
		if !isObj {
			return nil, fail(`"apiMigrations" must be an object or absent`)
		}
		if si, ok := m["signed-install"]; ok && si != true {
			return nil, fail(`"apiMigrations.signed-install" must be true or absent: the service only accepts signed installs`)
		}
	}
	if v, ok := d["cloudAppMigration"]; ok {
		m, isObj := v.(map[string]any)
		if !isObj {
			return nil, fail(`"cloudAppMigration" must be an object or absent`)
		}
		if p, ok := m["migrationWebhookPath"]; ok && p != PathMigrationEvents {
			return nil, fail(`"cloudAppMigration.migrationWebhookPath" is %v; the service receives migration events at %q: remove it`, p, PathMigrationEvents)
		}
	}
	return d, nil
}

func (s *Server) serveDescriptor(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, "application/json", s.descriptor)
}
