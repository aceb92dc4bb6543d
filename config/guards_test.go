package config

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// loadWith returns the error of Load for minimal() with set applied ("" deletes).
func loadWith(set map[string]string) error {
	m := minimal()
	for k, v := range set {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	_, err := Load(env(m))
	return err
}

func TestLoad_RefusesThePublicDevKeyInAnyEncoding(t *testing.T) {
	tests := []struct{ name, key string }{
		{"canonical", DevSecretKey},
		{"unpadded", strings.TrimRight(DevSecretKey, "=")},
		{"non-canonical final character", strings.TrimSuffix(DevSecretKey, "E=") + "F="},
		{"non-canonical and unpadded", strings.TrimSuffix(DevSecretKey, "E=") + "H"},
		{"with a line break", DevSecretKey[:20] + "\n" + DevSecretKey[20:]},
	}
	for _, tt := range tests {
		for _, name := range []string{"CONNECT_SECRET_KEY", "CONNECT_SECRET_KEY_PREVIOUS"} {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				err := loadWith(map[string]string{name: tt.key, "DEV_MODE": "false"})
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Load accepted the public development key as %q: %v", tt.key, err)
				}
				if want := name + " is the public development key"; !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to contain %q", err, want)
				}
			})
		}
	}
}

func TestLoad_RefusesKnownAndLowEntropyTokensOutsideDevMode(t *testing.T) {
	tests := []struct {
		name, variable, token string
		want                  string // "" = accepted
	}{
		{"the dev script's admin token", "ADMIN_TOKEN", DevAdminToken, "ADMIN_TOKEN is a known development token"},
		{"the dev script's token, other case", "ADMIN_TOKEN", strings.ToUpper(DevAdminToken), "ADMIN_TOKEN is a known development token"},
		{"a placeholder", "ADMIN_TOKEN", "please-change-me-soon", "ADMIN_TOKEN is a known development token"},
		{"one character repeated", "ADMIN_TOKEN", "aaaaaaaaaaaaaaaa", "ADMIN_TOKEN has only 1 distinct characters"},
		{"two characters alternating", "ADMIN_TOKEN", "abababababababababab", "ADMIN_TOKEN has only 2 distinct characters"},
		{"five characters", "ADMIN_TOKEN", "abcdeabcdeabcdeabcde", "ADMIN_TOKEN has only 5 distinct characters"},
		{"internal: one character repeated", "INTERNAL_TOKEN", strings.Repeat("a", 32), "INTERNAL_TOKEN has only 1 distinct characters"},
		{"internal: the dev admin token padded", "INTERNAL_TOKEN", DevAdminToken + "-0123456789", "INTERNAL_TOKEN is a known development token"},
		{"random hex admin token", "ADMIN_TOKEN", "9f86d081884c7d65", ""},
		{"random base64 internal token", "INTERNAL_TOKEN", "q0Jd8xT4VwZr1mPc7yLs2NbKf6HgUeAo", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadWith(map[string]string{tt.variable: tt.token, "DEV_MODE": "false"})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Load refused a good token: %v", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Load accepted %s=%q, want %q", tt.variable, tt.token, tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			case strings.Contains(err.Error(), tt.token):
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

func TestLoad_DevModeAcceptsTheDevScriptsToken(t *testing.T) {
	if err := loadWith(map[string]string{"ADMIN_TOKEN": DevAdminToken, "DEV_MODE": "true"}); err != nil {
		t.Fatalf("Load in dev mode: %v", err)
	}
}

func TestDevAdminToken_IsTheDevScriptsToken(t *testing.T) {
	b, err := os.ReadFile("../scripts/dev")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `ADMIN_TOKEN:-`+DevAdminToken+`}`) {
		t.Errorf("scripts/dev does not default ADMIN_TOKEN to DevAdminToken %q", DevAdminToken)
	}
}

func TestLoad_KeyServerMustBeHTTPSUnlessLoopback(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://keys.example.com", "CONNECT_KEYS_CDN_URL must be https (http only for a loopback host)"},
		{"http://10.0.0.7:8080/keys", "CONNECT_KEYS_CDN_URL must be https (http only for a loopback host)"},
		{"HTTP://keys.example.com", "CONNECT_KEYS_CDN_URL must be https (http only for a loopback host)"},
		{"https://keys.example.com/", ""},
		{"http://127.0.0.1:9999/keys", ""},
		{"http://localhost:9999", ""},
		{"http://[::1]:9999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := loadWith(map[string]string{"CONNECT_KEYS_CDN_URL": tt.url})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Load refused %q: %v", tt.url, err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Load accepted CONNECT_KEYS_CDN_URL=%q", tt.url)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoad_ProductHostGlobsNeedALiteralDomain(t *testing.T) {
	tests := []struct{ globs, want string }{
		{"*", `CONNECT_PRODUCT_HOSTS entry "*" is too broad`},
		{"*.*", `CONNECT_PRODUCT_HOSTS entry "*.*" is too broad`},
		{"*.atlassian.net,*,*.*", `CONNECT_PRODUCT_HOSTS entry "*" is too broad`},
		{"*.com", `CONNECT_PRODUCT_HOSTS entry "*.com" is too broad`},
		{"*.*.net", `CONNECT_PRODUCT_HOSTS entry "*.*.net" is too broad`},
		{"*atlassian.net", `CONNECT_PRODUCT_HOSTS entry "*atlassian.net" is too broad`},
		{"jira.*.com", `CONNECT_PRODUCT_HOSTS entry "jira.*.com" is too broad`},
		{"*.atlassian.*", `CONNECT_PRODUCT_HOSTS entry "*.atlassian.*" is too broad`},
		{"*.atlassian.net,*.jira.com,*.jira-dev.com", ""},
		{"*.*.atlassian.net", ""},
		{"jira-*.example.com", ""},
		{"acme.atlassian.net", ""},
		{"127.0.0.1", ""},
		{"localhost", ""},
	}
	for _, tt := range tests {
		t.Run(tt.globs, func(t *testing.T) {
			err := loadWith(map[string]string{"CONNECT_PRODUCT_HOSTS": tt.globs})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Load refused %q: %v", tt.globs, err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Load accepted CONNECT_PRODUCT_HOSTS=%q", tt.globs)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoad_TrustedProxiesAreCIDRsOrIPs(t *testing.T) {
	tests := []struct {
		raw  string
		want []string // the prefixes, or nil with wantErr
		err  string
	}{
		{"", nil, ""},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}, ""},
		{" 10.1.2.3/8 , 192.0.2.7, 2001:db8::/32, ::1", []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"}, ""},
		{"10.0.0.0/33", nil, `TRUSTED_PROXIES entries must be IP addresses or CIDRs like 10.0.0.0/8, got "10.0.0.0/33"`},
		{"proxy.internal", nil, `TRUSTED_PROXIES entries must be IP addresses or CIDRs like 10.0.0.0/8, got "proxy.internal"`},
		{"fe80::1%eth0", nil, `TRUSTED_PROXIES entries must be IP addresses or CIDRs like 10.0.0.0/8, got "fe80::1%eth0"`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			m := minimal()
			m["TRUSTED_PROXIES"] = tt.raw
			c, err := Load(env(m))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var got []string
			for _, p := range c.TrustedProxies {
				got = append(got, p.String())
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("TrustedProxies = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLoad_WorkerMetricsDefaultBindsLoopback(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(c.WorkerMetricsAddr)
	if err != nil {
		t.Fatalf("WORKER_METRICS_ADDR default %q: %v", c.WorkerMetricsAddr, err)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		t.Errorf("WORKER_METRICS_ADDR defaults to %q, want a loopback address", c.WorkerMetricsAddr)
	}
}
