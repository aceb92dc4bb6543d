package tenant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/jsonobj"
)

// InstallPayload is a parsed lifecycle body: what installed (or another lifecycle
// event) says about the tenant, plus the shared secret. Build it with
// ParseInstallPayload from a verified body.
type InstallPayload struct {
	connectrelay.HostInfo
	// EventType (eventType) is the lifecycle event the body claims to be, empty if
	// absent. The handler compares it with the route.
	EventType string
	// SharedSecret (sharedSecret) is the HS256 secret of the tenant. It is stored only
	// encrypted and never logged.
	SharedSecret string
	// Raw is a copy of the whole body, for the app's own use (it holds the secret:
	// never persist or log it).
	Raw json.RawMessage
}

// Limits of ParseInstallPayload. They keep every accepted body storable: Postgres
// rejects index entries over about 2.7 kB and deeply nested jsonb.
const (
	// MaxFieldLength is the longest accepted modelled string field, in bytes.
	MaxFieldLength = 2048
	// MaxExtraDepth is the deepest nesting accepted inside an unmodelled field.
	MaxExtraDepth = 32
)

// hostField ties a HostInfo field to its JSON name and column, so parsing, diffing and
// SQL all come from one list.
type hostField struct {
	json, column string
	ptr          func(*connectrelay.HostInfo) *string
}

var hostFields = []hostField{
	{"clientKey", "client_key", func(h *connectrelay.HostInfo) *string { return &h.ClientKey }},
	{"key", "app_key", func(h *connectrelay.HostInfo) *string { return &h.AppKey }},
	{"baseUrl", "base_url", func(h *connectrelay.HostInfo) *string { return &h.BaseURL }},
	{"displayUrl", "display_url", func(h *connectrelay.HostInfo) *string { return &h.DisplayURL }},
	{"displayUrlServicedeskHelpCenter", "display_url_servicedesk_help_center", func(h *connectrelay.HostInfo) *string { return &h.DisplayURLServicedeskHelpCenter }},
	{"productType", "product_type", func(h *connectrelay.HostInfo) *string { return &h.ProductType }},
	{"description", "description", func(h *connectrelay.HostInfo) *string { return &h.Description }},
	{"serverVersion", "server_version", func(h *connectrelay.HostInfo) *string { return &h.ServerVersion }},
	{"pluginsVersion", "plugins_version", func(h *connectrelay.HostInfo) *string { return &h.PluginsVersion }},
	{"serviceEntitlementNumber", "service_entitlement_number", func(h *connectrelay.HostInfo) *string { return &h.ServiceEntitlementNumber }},
	{"entitlementId", "entitlement_id", func(h *connectrelay.HostInfo) *string { return &h.EntitlementID }},
	{"entitlementNumber", "entitlement_number", func(h *connectrelay.HostInfo) *string { return &h.EntitlementNumber }},
	{"oauthClientId", "oauth_client_id", func(h *connectrelay.HostInfo) *string { return &h.OAuthClientID }},
	{"installationId", "installation_id", func(h *connectrelay.HostInfo) *string { return &h.InstallationID }},
	{"cloudId", "cloud_id", func(h *connectrelay.HostInfo) *string { return &h.CloudID }},
}

// Body fields that are never stored: the secret is stored only encrypted, and
// publicKey is deprecated and must not be used.
const (
	fieldSharedSecret = "sharedSecret"
	fieldPublicKey    = "publicKey"
	fieldEventType    = "eventType"
)

var lifecycleEvents = []string{EventInstalled, EventUninstalled, EventEnabled, EventDisabled}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPayload, fmt.Sprintf(format, args...))
}

// ParseInstallPayload parses a lifecycle body strictly: it must be one JSON object of
// valid UTF-8 with no duplicate names and nothing after it. clientKey, key and baseUrl
// (an absolute http(s) URL) are required; sharedSecret is required unless eventType
// names another lifecycle event than installed, so the same parser serves the bodies
// of uninstalled, enabled and disabled. eventType, if present, must be a lifecycle
// event. Modelled fields must be strings (null counts as absent) of at most
// MaxFieldLength bytes. Every other field is kept in Extra, except publicKey, which is
// dropped. No string anywhere may contain U+0000, which Postgres cannot store.
//
// Every error wraps ErrInvalidPayload (a 400).
func ParseInstallPayload(body []byte) (InstallPayload, error) {
	if !utf8.Valid(body) {
		return InstallPayload{}, invalid("body is not valid UTF-8")
	}
	fields, err := objectFields(body)
	if err != nil {
		return InstallPayload{}, err
	}

	var p InstallPayload
	for _, f := range hostFields {
		if err := takeString(fields, f.json, f.ptr(&p.HostInfo)); err != nil {
			return InstallPayload{}, err
		}
	}
	if err := takeString(fields, fieldSharedSecret, &p.SharedSecret); err != nil {
		return InstallPayload{}, err
	}
	if err := takeString(fields, fieldEventType, &p.EventType); err != nil {
		return InstallPayload{}, err
	}
	delete(fields, fieldPublicKey)

	if p.EventType != "" && !slices.Contains(lifecycleEvents, p.EventType) {
		return InstallPayload{}, invalid("eventType %q is not a lifecycle event", p.EventType)
	}
	if err := p.validate(); err != nil {
		return InstallPayload{}, err
	}

	extra := make(map[string]json.RawMessage, len(fields))
	for name, raw := range fields {
		v, err := normalizeExtra(name, raw)
		if err != nil {
			return InstallPayload{}, err
		}
		extra[name] = v
	}
	if p.Extra, err = json.Marshal(extra); err != nil {
		return InstallPayload{}, invalid("re-encode unmodelled fields: %v", err)
	}
	p.Raw = bytes.Clone(body)
	return p, nil
}

// validate checks the fields every stored payload needs, whether parsed or built by a
// caller.
func (p *InstallPayload) validate() error {
	for _, req := range []struct{ name, value string }{
		{"clientKey", p.ClientKey}, {"key", p.AppKey}, {"baseUrl", p.BaseURL},
	} {
		if req.value == "" {
			return invalid("%s is required", req.name)
		}
	}
	if p.SharedSecret == "" && (p.EventType == "" || p.EventType == EventInstalled) {
		return invalid("sharedSecret is required")
	}
	u, err := url.Parse(p.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return invalid("baseUrl %q is not an absolute http(s) URL", p.BaseURL)
	}
	return nil
}

// objectFields splits a JSON object into its members, rejecting anything else and
// duplicate names (two parsers reading one body differently is how signed data gets
// smuggled).
func objectFields(body []byte) (map[string]json.RawMessage, error) {
	// A valid object is walked in place (no reflection, no copies); anything
	// else goes through the decoder, whose errors are the messages.
	if json.Valid(body) {
		if fields, err := jsonobj.Unique(body); err == nil {
			return fields, nil
		}
	}
	return decodeObjectFields(body)
}

// decodeObjectFields is objectFields with encoding/json's decoder, for the
// bodies that are not a valid JSON object without duplicate names.
func decodeObjectFields(body []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("body is not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, invalid("body is not a JSON object")
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalid("body is not JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, invalid("body is not a JSON object")
		}
		if _, dup := fields[name]; dup {
			return nil, invalid("field %q appears twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, invalid("field %q: %v", name, err)
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, invalid("body is not JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("data after the JSON object")
	}
	return fields, nil
}

// takeString moves a string member out of fields into dst.
func takeString(fields map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	delete(fields, name)
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil {
		return invalid("%s must be a string", name)
	}
	if s == nil {
		return nil
	}
	if len(*s) > MaxFieldLength {
		return invalid("%s is longer than %d bytes", name, MaxFieldLength)
	}
	if strings.ContainsRune(*s, 0) {
		return invalid("%s contains U+0000", name)
	}
	*dst = *s
	return nil
}

// normalizeExtra re-encodes an unmodelled member with Go's encoder so that what is
// stored is JSON Postgres accepts: lone surrogate escapes become U+FFFD, numbers keep
// their exact text. It rejects U+0000 and nesting deeper than MaxExtraDepth.
func normalizeExtra(name string, raw json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalid("field %q: %v", name, err)
	}
	if strings.ContainsRune(name, 0) {
		return nil, invalid("a field name contains U+0000")
	}
	if err := checkValue(name, v, 1); err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, invalid("field %q: %v", name, err)
	}
	return out, nil
}

func checkValue(name string, v any, depth int) error {
	switch v := v.(type) {
	case string:
		if strings.ContainsRune(v, 0) {
			return invalid("field %q contains U+0000", name)
		}
	case []any:
		if depth > MaxExtraDepth {
			return invalid("field %q is nested deeper than %d", name, MaxExtraDepth)
		}
		for _, e := range v {
			if err := checkValue(name, e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		if depth > MaxExtraDepth {
			return invalid("field %q is nested deeper than %d", name, MaxExtraDepth)
		}
		for k, e := range v {
			if strings.ContainsRune(k, 0) {
				return invalid("field %q contains U+0000", name)
			}
			if err := checkValue(name, e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
