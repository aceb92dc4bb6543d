package handlers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeDescriptor(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "descriptor.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var testOwned = ownedValues{key: "com.example.app", baseURL: "https://app.example.com", lifecycle: map[string]string{
	"installed": PathInstalled, "uninstalled": PathUninstalled, "enabled": PathEnabled, "disabled": PathDisabled,
}}

func TestDescriptorFile_ConflictsWithOwnedMembersNameTheMember(t *testing.T) {
	tests := []struct {
		name, body, want string // want "" = accepted
	}{
		{"modules and scopes", `{"modules":{"generalPages":[{"key":"p","url":"/p"}]},"scopes":["READ","WRITE"]}`, ""},
		{"the vendor's own descriptor, owned members as served", `{"key":"com.example.app","baseUrl":"https://app.example.com/",
			"authentication":{"type":"JWT"},"lifecycle":{"installed":"/installed","uninstalled":"/uninstalled"},
			"apiMigrations":{"signed-install":true,"gdpr":true,"context-qsh":true},
			"cloudAppMigration":{"migrationWebhookPath":"/migration/events"}}`, ""},
		{"another key", `{"key":"com.other"}`, `"key" is "com.other"`},
		{"another baseUrl", `{"baseUrl":"https://elsewhere.example.com"}`, `"baseUrl"`},
		{"another authentication", `{"authentication":{"type":"none"}}`, `"authentication"`},
		{"another installed path", `{"lifecycle":{"installed":"/my-installed"}}`, `"lifecycle.installed"`},
		{"an unknown lifecycle", `{"lifecycle":{"preUninstall":"/x"}}`, `"lifecycle.preUninstall"`},
		{"lifecycle not an object", `{"lifecycle":"/x"}`, `"lifecycle" must be an object`},
		{"signed install off", `{"apiMigrations":{"signed-install":false}}`, `"apiMigrations.signed-install"`},
		{"another webhook path", `{"cloudAppMigration":{"migrationWebhookPath":"/mine"}}`, `"cloudAppMigration.migrationWebhookPath"`},
		{"not an object", `["modules"]`, "not a JSON object"},
		{"two values", `{} {}`, "more than one JSON value"},
		{"not JSON", `{"modules":`, "not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeDescriptor(t, tc.body)
			_, err := readDescriptorFile(p, testOwned)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "CONNECT_DESCRIPTOR_FILE") {
				t.Fatalf("error = %v, want one naming CONNECT_DESCRIPTOR_FILE and %s", err, tc.want)
			}
		})
	}
	if _, err := readDescriptorFile(filepath.Join(t.TempDir(), "missing.json"), testOwned); err == nil ||
		!strings.Contains(err.Error(), "CONNECT_DESCRIPTOR_FILE") {
		t.Fatalf("missing file: %v", err)
	}
	big := writeDescriptor(t, `{"x":"`+strings.Repeat("a", maxDescriptorFile)+`"}`)
	if _, err := readDescriptorFile(big, testOwned); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: %v", err)
	}
}
