package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func minimal() map[string]string {
	return map[string]string{
		"CONNECT_APP_KEY":    "com.example.app",
		"CONNECT_BASE_URL":   "https://app.example.com/",
		"CONNECT_SECRET_KEY": testKey,
	}
}

func TestLoad_AppliesContractDefaults(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		ListenAddr:          ":8080",
		RedisURL:            "redis://127.0.0.1:6379/0",
		DatabaseURL:         "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		AppKey:              "com.example.app",
		AppName:             "com.example.app",
		BaseURL:             "https://app.example.com",
		ProductHosts:        DefaultProductHosts,
		Scopes:              []string{"READ"},
		SecretKey:           c.SecretKey,
		JWTLeeway:           30 * time.Second,
		MigrationFinalLabel: "final",
		WorkerConcurrency:   10,
		WorkerMetricsAddr:   "127.0.0.1:9091",
		InternalListenAddr:  "127.0.0.1:8081",
		InternalURL:         "http://127.0.0.1:8081",
		ForwardTimeout:      30 * time.Second,
		ShutdownTimeout:     25 * time.Second,
		LogLevel:            "info",
		ForgeJWKSURL:        "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json",
		ForgeEnvironments:   []string{"PRODUCTION"},
		ForgeAPIHosts:       []string{"api.atlassian.com"},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
	if len(c.SecretKey) != 32 || c.SecretKey[31] != 31 {
		t.Errorf("secret key decoded wrongly: %v", c.SecretKey)
	}
	if got := c.MigrationWebhookURL(); got != "https://app.example.com/migration/events" {
		t.Errorf("MigrationWebhookURL = %q", got)
	}
}

func TestLoad_ReadsListsAndOverrides(t *testing.T) {
	m := minimal()
	m["CONNECT_ALLOWED_BASE_URLS"] = " https://old.example.com/ , https://older.example.com/addon"
	m["CONNECT_PRODUCT_HOSTS"] = "*.atlassian.net, 127.0.0.1"
	m["CONNECT_KEYS_CDN_URL"] = "http://127.0.0.1:9999/keys/"
	m["ADMIN_TOKEN"] = "0123456789abcdef0123"
	m["DEV_MODE"] = "false"
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff([]string{"https://app.example.com", "https://old.example.com", "https://older.example.com/addon"}, c.AppBaseURLs()); diff != "" {
		t.Errorf("AppBaseURLs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"*.atlassian.net", "127.0.0.1"}, c.ProductHosts); diff != "" {
		t.Errorf("ProductHosts (-want +got):\n%s", diff)
	}
	if c.KeysCDNURL != "http://127.0.0.1:9999/keys" {
		t.Errorf("KeysCDNURL = %q", c.KeysCDNURL)
	}
}

func TestLoad_ErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
		want string
	}{
		{"missing base url", map[string]string{"CONNECT_BASE_URL": ""}, `CONNECT_BASE_URL must be an absolute http(s) URL, got ""`},
		{"relative base url", map[string]string{"CONNECT_BASE_URL": "/app"}, `CONNECT_BASE_URL must be an absolute http(s) URL`},
		{"base url with query", map[string]string{"CONNECT_BASE_URL": "https://a.example.com/?x=1"}, `CONNECT_BASE_URL must be an absolute http(s) URL`},
		{"missing app key", map[string]string{"CONNECT_APP_KEY": ""}, "CONNECT_APP_KEY is required"},
		{"app key with spaces", map[string]string{"CONNECT_APP_KEY": "my app"}, "CONNECT_APP_KEY must be"},
		{"missing secret key", map[string]string{"CONNECT_SECRET_KEY": ""}, "CONNECT_SECRET_KEY is required"},
		{"short secret key", map[string]string{"CONNECT_SECRET_KEY": "c2hvcnQ="}, "CONNECT_SECRET_KEY must be a base64-encoded 32-byte key, got 5 bytes"},
		{"dev key outside dev mode", map[string]string{"CONNECT_SECRET_KEY": DevSecretKey}, "public development key"},
		{"bad allowed url", map[string]string{"CONNECT_ALLOWED_BASE_URLS": "ftp://x"}, "CONNECT_ALLOWED_BASE_URLS must be an absolute http(s) URL"},
		{"bad redis url", map[string]string{"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL must be a redis:// URL"},
		{"bad database url", map[string]string{"DATABASE_URL": "mysql://u:hunter2@x/db"}, "DATABASE_URL must be a postgres:// URL"},
		{"short admin token", map[string]string{"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN must be at least 16 characters"},
		{"bad bool", map[string]string{"DEV_MODE": "yes please"}, `DEV_MODE must be true or false, got "yes please"`},
		{"bad duration", map[string]string{"CONNECT_JWT_LEEWAY": "30"}, `CONNECT_JWT_LEEWAY must be a duration like 30s, got "30"`},
		{"leeway too large", map[string]string{"CONNECT_JWT_LEEWAY": "1h"}, "CONNECT_JWT_LEEWAY must be between 0s and 5m"},
		{"bad concurrency", map[string]string{"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be between 1 and 1000, got 0"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"},
		{"forge app id not an ari", map[string]string{"FORGE_APP_ID": "my-app"}, `FORGE_APP_ID must be the app ARI`},
		{"forge app id installation ari", map[string]string{"FORGE_APP_ID": "ari:cloud:ecosystem::installation/8a7c4bd2-2b33-4d4b-9a5e-2f3f4c1c2d1e"}, `FORGE_APP_ID must be the app ARI`},
		{"forge jwks over http", map[string]string{"FORGE_JWKS_URL": "http://keys.example.com/jwks.json"}, "FORGE_JWKS_URL must be an absolute https URL"},
		{"forge jwks relative", map[string]string{"FORGE_JWKS_URL": "/jwks.json"}, "FORGE_JWKS_URL must be an absolute https URL"},
		{"forge environment unknown", map[string]string{"FORGE_ENVIRONMENTS": "PRODUCTION,TEST"}, `FORGE_ENVIRONMENTS values must be among PRODUCTION, STAGING, DEVELOPMENT, got "TEST"`},
		{"forge api host with scheme", map[string]string{"FORGE_API_HOSTS": "https://api.atlassian.com"}, "FORGE_API_HOSTS entries must be exact host names"},
		{"forge api host wildcard", map[string]string{"FORGE_API_HOSTS": "*.atlassian.com"}, "FORGE_API_HOSTS entries must be exact host names"},
		{"host glob with scheme", map[string]string{"CONNECT_PRODUCT_HOSTS": "https://x.atlassian.net"}, "CONNECT_PRODUCT_HOSTS entries must be hostname globs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := minimal()
			for k, v := range tt.set {
				m[k] = v
			}
			_, err := Load(env(m))
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoad_ForwardingSettings(t *testing.T) {
	const token = "k3y-0f-the-internal-api-Zq81xW7Lm2"
	const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	tests := []struct {
		name string
		set  map[string]string
		want string // "" = valid
	}{
		{"complete", map[string]string{"FORWARD_URL": "https://backend.example/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token}, ""},
		{"loopback http", map[string]string{"FORWARD_URL": "http://127.0.0.1:3000/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token}, ""},
		{"no secret", map[string]string{"FORWARD_URL": "https://backend.example/hooks", "INTERNAL_TOKEN": token}, "FORWARD_SECRET is required with FORWARD_URL"},
		{"no internal token", map[string]string{"FORWARD_URL": "https://backend.example/hooks", "FORWARD_SECRET": secret}, "FORWARD_URL needs INTERNAL_TOKEN"},
		{"internal listener off", map[string]string{"FORWARD_URL": "https://backend.example/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token, "INTERNAL_LISTEN_ADDR": "off"}, "FORWARD_URL needs INTERNAL_URL"},
		{"internal listener off, URL given", map[string]string{"FORWARD_URL": "https://backend.example/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token, "INTERNAL_LISTEN_ADDR": "off", "INTERNAL_URL": "https://relay-internal.example"}, ""},
		{"http to another host", map[string]string{"FORWARD_URL": "http://backend.example/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token}, "FORWARD_URL must be https"},
		{"credentials in the URL", map[string]string{"FORWARD_URL": "https://u:p@backend.example/hooks", "FORWARD_SECRET": secret, "INTERNAL_TOKEN": token}, "FORWARD_URL must be an absolute https URL without credentials"},
		{"secret without prefix", map[string]string{"FORWARD_SECRET": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "FORWARD_SECRET must be whsec_"},
		{"short secret", map[string]string{"FORWARD_SECRET": "whsec_c2hvcnQ="}, "FORWARD_SECRET must be whsec_"},
		{"internal URL with query", map[string]string{"INTERNAL_URL": "http://127.0.0.1:8081/?a=b"}, "INTERNAL_URL must be an absolute http(s) URL"},
		{"timeout too long", map[string]string{"FORWARD_TIMEOUT": "1h"}, "FORWARD_TIMEOUT must be between"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := minimal()
			for k, v := range tt.set {
				m[k] = v
			}
			c, err := Load(env(m))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.InternalURL == "" {
					t.Fatal("no InternalURL")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "MDEyMzQ1Njc4") {
				t.Fatalf("error repeats the secret: %v", err)
			}
		})
	}
	c, err := Load(env(map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "https://a.example", "CONNECT_SECRET_KEY": testKey, "INTERNAL_LISTEN_ADDR": "0.0.0.0:9000"}))
	if err != nil || c.InternalURL != "http://127.0.0.1:9000" {
		t.Fatalf("wildcard listen address: InternalURL %q, %v", c.InternalURL, err)
	}
}

func TestLoad_ForgeSettings(t *testing.T) {
	m := minimal()
	m["FORGE_APP_ID"] = "8A7C4BD2-2B33-4D4B-9A5E-2F3F4C1C2D1E"
	m["FORGE_JWKS_URL"] = "http://127.0.0.1:7000/jwks.json"
	m["FORGE_ENVIRONMENTS"] = "production, development"
	m["FORGE_API_HOSTS"] = "API.atlassian.com,localhost"
	m["FORGE_LIFECYCLE_MODULE_KEYS"] = "lifecycle-events"
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := "ari:cloud:ecosystem::app/8a7c4bd2-2b33-4d4b-9a5e-2f3f4c1c2d1e"; c.ForgeAppID != want {
		t.Errorf("ForgeAppID = %q, want %q", c.ForgeAppID, want)
	}
	if diff := cmp.Diff([]string{"PRODUCTION", "DEVELOPMENT"}, c.ForgeEnvironments); diff != "" {
		t.Errorf("ForgeEnvironments (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"api.atlassian.com", "localhost"}, c.ForgeAPIHosts); diff != "" {
		t.Errorf("ForgeAPIHosts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"lifecycle-events"}, c.ForgeLifecycleModules); diff != "" {
		t.Errorf("ForgeLifecycleModules (-want +got):\n%s", diff)
	}
	if !c.ForgeInsecure() {
		t.Error("ForgeInsecure = false for an http loopback JWKS URL")
	}
}

func TestLoad_NeverEchoesDatabasePassword(t *testing.T) {
	m := minimal()
	m["DATABASE_URL"] = "mysql://u:hunter2@x/db"
	_, err := Load(env(m))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error must exist and not contain the password: %v", err)
	}
}

func TestLoad_DevModeProvidesPublicKey(t *testing.T) {
	m := minimal()
	delete(m, "CONNECT_SECRET_KEY")
	m["DEV_MODE"] = "true"
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if string(c.SecretKey) != "dev-only-key-do-not-use-in-prod!" {
		t.Errorf("dev key not applied: %q", c.SecretKey)
	}
}

func TestLoad_ReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Load(env(map[string]string{}))
	if err == nil {
		t.Fatal("Load of an empty environment succeeded")
	}
	for _, want := range []string{"CONNECT_APP_KEY", "CONNECT_BASE_URL", "CONNECT_SECRET_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
