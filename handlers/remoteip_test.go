package handlers_test

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay/handlers"
)

func TestRequestLog_RemoteIPTrustsForwardingHeadersOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		trusted []netip.Prefix
		xff     string
		want    string
	}{
		{"no trusted proxies: spoofed X-Forwarded-For ignored", nil, "203.0.113.7", "127.0.0.1"},
		{"no trusted proxies: a private address in the header ignored too", nil, "10.0.0.1", "127.0.0.1"},
		{"loopback proxy trusted: the client it names", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.7", "203.0.113.7"},
		{"loopback proxy trusted: the first untrusted hop from the right", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "198.51.100.9, 203.0.113.7", "203.0.113.7"},
		{"another proxy range trusted: the peer is not in it", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "203.0.113.7", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{trustedProxies: tt.trusted})
			req, _ := http.NewRequest(http.MethodGet, h.baseURL+handlers.PathDescriptor, nil)
			req.Header.Set("X-Forwarded-For", tt.xff)
			req.Header.Set("X-Real-IP", "192.0.2.99")
			if code, body := h.do(req); code != http.StatusOK {
				t.Fatalf("descriptor = %d %s", code, body)
			}
			var got []string
			for _, line := range h.logs.Lines() {
				var rec struct {
					Msg      string `json:"msg"`
					Route    string `json:"route"`
					RemoteIP string `json:"remote_ip"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http request" && rec.Route == handlers.PathDescriptor {
					got = append(got, rec.RemoteIP)
				}
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("logged remote_ip = %v, want [%s] (X-Forwarded-For: %s)", got, tt.want, tt.xff)
			}
			if strings.Contains(h.logs.String(), "192.0.2.99") {
				t.Error("X-Real-IP was trusted")
			}
		})
	}
}
