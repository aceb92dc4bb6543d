package tenant

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/connectrelay/connectrelay"

	"github.com/google/go-cmp/cmp"
)

func TestParseInstallPayloadFields(t *testing.T) {
	t.Parallel()
	in := body(t, "ck-1", map[string]any{
		"oauthClientId":  "oauth-1",
		"installationId": "ari:cloud:ecosystem::installation/1",
		"cloudId":        "cloud-1",
		"publicKey":      "MIIBIjANBgkq...",
		"futureField":    map[string]any{"nested": []any{1, "two", nil}},
		"bigNumber":      json.Number("12345678901234567890123"),
	})
	got, err := ParseInstallPayload(in)
	if err != nil {
		t.Fatalf("ParseInstallPayload: %v", err)
	}
	want := connectrelay.HostInfo{
		ClientKey:                       "ck-1",
		AppKey:                          "installed-addon-key",
		BaseURL:                         "https://ck-1.atlassian.net",
		DisplayURL:                      "https://issues.example.com",
		DisplayURLServicedeskHelpCenter: "https://support.example.com",
		ProductType:                     "jira",
		Description:                     "Atlassian Jira at https://example.atlassian.net",
		ServerVersion:                   "server-version",
		PluginsVersion:                  "1.0.0",
		ServiceEntitlementNumber:        "SEN-number",
		EntitlementID:                   "Entitlement-Id",
		EntitlementNumber:               "Entitlement-Number",
		OAuthClientID:                   "oauth-1",
		InstallationID:                  "ari:cloud:ecosystem::installation/1",
		CloudID:                         "cloud-1",
		Extra:                           json.RawMessage(`{"bigNumber":12345678901234567890123,"futureField":{"nested":[1,"two",null]}}`),
	}
	if diff := cmp.Diff(want, got.HostInfo); diff != "" {
		t.Errorf("HostInfo (-want +got):\n%s", diff)
	}
	if got.SharedSecret != "secret-of-ck-1" || got.EventType != "installed" {
		t.Errorf("SharedSecret, EventType = %q, %q", got.SharedSecret, got.EventType)
	}
	if !bytes.Equal(got.Raw, in) {
		t.Errorf("Raw = %s, want the body", got.Raw)
	}
}

func TestParseInstallPayloadNullOptionalFields(t *testing.T) {
	t.Parallel()
	got, err := ParseInstallPayload([]byte(`{"key":"k","clientKey":"c","sharedSecret":"s","baseUrl":"http://127.0.0.1:9","displayUrl":null}`))
	if err != nil {
		t.Fatalf("ParseInstallPayload: %v", err)
	}
	if got.DisplayURL != "" || string(got.Extra) != "{}" {
		t.Errorf("DisplayURL, Extra = %q, %s; want empty, {}", got.DisplayURL, got.Extra)
	}
}

func TestParseInstallPayloadOtherLifecycleEventsNeedNoSecret(t *testing.T) {
	t.Parallel()
	for _, ev := range []string{"uninstalled", "enabled", "disabled"} {
		if _, err := ParseInstallPayload(body(t, "c", map[string]any{"eventType": ev, "sharedSecret": nil})); err != nil {
			t.Errorf("%s without sharedSecret: %v", ev, err)
		}
	}
}

func TestParseInstallPayloadRejects(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	nested := strings.Repeat(`{"a":`, MaxExtraDepth+1) + "1" + strings.Repeat("}", MaxExtraDepth+1)
	valid := string(body(t, "c", nil))
	tests := []struct {
		desc string
		in   string
	}{
		{"empty", ""},
		{"not JSON", "clientKey=c"},
		{"array", `[{"clientKey":"c"}]`},
		{"string", `"c"`},
		{"null", `null`},
		{"huge nesting as body", deep},
		{"huge nesting in a field", strings.TrimSuffix(valid, "}") + `,"x":` + deep + "}"},
		{"nesting deeper than MaxExtraDepth", strings.TrimSuffix(valid, "}") + `,"x":` + nested + "}"},
		{"trailing data", valid + `{}`},
		{"truncated", valid[:len(valid)-1]},
		{"invalid UTF-8", strings.Replace(valid, "jira", "ji\xffra", 1)},
		{"duplicate field", strings.TrimSuffix(valid, "}") + `,"clientKey":"other"}`},
		{"missing clientKey", string(body(t, "c", map[string]any{"clientKey": nil}))},
		{"empty clientKey", string(body(t, "", nil))},
		{"missing key", string(body(t, "c", map[string]any{"key": nil}))},
		{"missing baseUrl", string(body(t, "c", map[string]any{"baseUrl": nil}))},
		{"missing sharedSecret", string(body(t, "c", map[string]any{"sharedSecret": nil}))},
		{"missing sharedSecret without eventType", string(body(t, "c", map[string]any{"sharedSecret": nil, "eventType": nil}))},
		{"null sharedSecret", strings.Replace(valid, `"sharedSecret":"secret-of-c"`, `"sharedSecret":null`, 1)},
		{"unknown eventType", string(body(t, "c", map[string]any{"eventType": "deleted"}))},
		{"baseUrl not a URL", string(body(t, "c", map[string]any{"baseUrl": "example.atlassian.net"}))},
		{"baseUrl ftp", string(body(t, "c", map[string]any{"baseUrl": "ftp://example.atlassian.net"}))},
		{"clientKey a number", string(body(t, "c", map[string]any{"clientKey": 42}))},
		{"sharedSecret an object", string(body(t, "c", map[string]any{"sharedSecret": map[string]any{"v": "s"}}))},
		{"description too long", string(body(t, "c", map[string]any{"description": strings.Repeat("d", MaxFieldLength+1)}))},
		{"NUL in clientKey", strings.Replace(valid, `"clientKey":"c"`, `"clientKey":"c\u0000"`, 1)},
		{"NUL in an extra value", strings.TrimSuffix(valid, "}") + `,"x":{"y":["\u0000"]}}`},
		{"NUL in an extra name", strings.TrimSuffix(valid, "}") + `,"x\u0000":1}`},
		{"NUL in a nested extra name", strings.TrimSuffix(valid, "}") + `,"x":{"\u0000":1}}`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := ParseInstallPayload([]byte(tc.in))
			if !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("ParseInstallPayload() error = %v, want ErrInvalidPayload", err)
			}
		})
	}
}

func TestParseInstallPayloadNormalizesExtraForPostgres(t *testing.T) {
	t.Parallel()
	valid := string(body(t, "c", nil))
	// A lone surrogate escape is valid JSON that jsonb rejects; "\\u0000" is a
	// backslash and text, not NUL.
	in := strings.TrimSuffix(valid, "}") + `,"lone":"\ud800","escaped":"\\u0000","n":1.50}`
	p, err := ParseInstallPayload([]byte(in))
	if err != nil {
		t.Fatalf("ParseInstallPayload: %v", err)
	}
	want := `{"escaped":"\\u0000","lone":"` + "\uFFFD" + `","n":1.50}`
	if string(p.Extra) != want {
		t.Errorf("Extra = %s, want %s", p.Extra, want)
	}
}

// FuzzParseInstallPayload checks the parser's promises on any input: it never panics,
// every error is ErrInvalidPayload, and what it accepts has the required fields and an
// Extra that is a JSON object free of secrets, NUL and deep nesting.
func FuzzParseInstallPayload(f *testing.F) {
	valid := body(f, "c", nil)
	f.Add(valid)
	f.Add([]byte(`{"key":"k","clientKey":"c","sharedSecret":"s","baseUrl":"https://a.atlassian.net","x":{"y":[1,2.5e3,null,true]}}`))
	f.Add([]byte(`{"key":"k","clientKey":"c","baseUrl":"https://a","eventType":"uninstalled"}`))
	f.Add([]byte(`{"key":"k","clientKey":"c","sharedSecret":"s","baseUrl":"https://a","publicKey":"p","lone":"\ud800"}`))
	f.Add([]byte(`{"clientKey":"c","clientKey":"d"}`))
	f.Add([]byte(strings.Repeat("[", 200)))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ParseInstallPayload(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("error %v does not wrap ErrInvalidPayload", err)
			}
			return
		}
		if p.ClientKey == "" || p.AppKey == "" || p.BaseURL == "" {
			t.Fatalf("accepted without a required field: %+v", p.HostInfo)
		}
		if p.SharedSecret == "" && (p.EventType == "" || p.EventType == EventInstalled) {
			t.Fatal("accepted an installed without sharedSecret")
		}
		var extra map[string]json.RawMessage
		if err := json.Unmarshal(p.Extra, &extra); err != nil || extra == nil {
			t.Fatalf("Extra %s is not a JSON object: %v", p.Extra, err)
		}
		for _, k := range []string{"sharedSecret", "publicKey", "clientKey", "eventType"} {
			if _, ok := extra[k]; ok {
				t.Fatalf("Extra holds %s", k)
			}
		}
		var decoded any
		if err := json.Unmarshal(p.Extra, &decoded); err != nil || !utf8.Valid(p.Extra) || hasNUL(decoded) {
			t.Fatalf("Extra %q has invalid UTF-8 or NUL (%v)", p.Extra, err)
		}
		for _, f := range hostFields {
			if v := *f.ptr(&p.HostInfo); strings.ContainsRune(v, 0) || len(v) > MaxFieldLength {
				t.Fatalf("%s = %q", f.json, v)
			}
		}
		if _, err := sanitizeExtra(p.Extra); err != nil {
			t.Fatalf("store would reject Extra %s: %v", p.Extra, err)
		}
	})
}

func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		for _, e := range v {
			if hasNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	}
	return false
}

// FuzzObjectFields_WalkerDecidesAsTheDecoder checks that objectFields' in-place
// walk of a valid object accepts, rejects and splits exactly as the
// json.Decoder path does, error messages included.
func FuzzObjectFields_WalkerDecidesAsTheDecoder(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"a":1, "b" : [1,{"c":"d"}] } `, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"x":1,"x":2}}`,
		`[]`, `null`, `"x"`, `{"a":1} {}`, `{"a":"\ud800"}`, "{\"\xff\":1}", `{"a":1e400}`, ``, `{"a":}`,
	} {
		f.Add([]byte(s))
	}
	f.Add(body(f, "c", nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := objectFields(in)
		want, wantErr := decodeObjectFields(in)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("objectFields(%q) error %v, decoder %v", in, err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("objectFields(%q) = %d members, decoder %d", in, len(got), len(want))
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
				t.Fatalf("objectFields(%q)[%q] = %q, decoder %q", in, k, g, v)
			}
		}
	})
}
