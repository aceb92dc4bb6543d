package product

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/connectrelay/connectrelay/connect"
	"github.com/connectrelay/connectrelay/product/producttest"
)

func TestCheckAddress_RefusesInternalAddresses(t *testing.T) {
	tests := []struct {
		ip            string
		allowLoopback bool
		refused       bool
	}{
		{"127.0.0.1", false, true},
		{"127.8.9.10", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"127.0.0.1", true, false},
		{"::1", true, false},
		{"10.1.2.3", true, true}, // the loopback switch allows loopback only
		{"172.16.0.1", false, true},
		{"172.31.255.255", false, true},
		{"192.168.1.1", false, true},
		{"::ffff:192.168.1.1", false, true},
		{"fd00:ec2::254", false, true}, // AWS metadata over IPv6 (ULA)
		{"fc00::1", false, true},
		{"169.254.169.254", true, true}, // cloud metadata
		{"fe80::1", false, true},
		{"100.100.100.200", false, true}, // Alibaba metadata (shared space)
		{"0.0.0.0", false, true},
		{"::", false, true},
		{"0.1.2.3", false, true},
		{"224.0.0.1", false, true},
		{"ff02::1", false, true},
		{"255.255.255.255", false, true},
		{"240.0.0.1", false, true},
		{"64:ff9b::a00:1", false, true}, // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false, true},  // 6to4 of 10.0.0.1
		{"52.216.0.1", false, false},    // S3
		{"2600:1f18::1", false, false},
	}
	for _, tc := range tests {
		err := checkAddress(netip.MustParseAddr(tc.ip), tc.allowLoopback)
		if got := err != nil; got != tc.refused {
			t.Errorf("checkAddress(%s, loopback allowed %v) = %v, want refused %v", tc.ip, tc.allowLoopback, err, tc.refused)
		}
		if err != nil && (!errors.Is(err, ErrAddressNotAllowed) || !strings.Contains(err.Error(), netip.MustParseAddr(tc.ip).Unmap().String())) {
			t.Errorf("checkAddress(%s) = %v, want ErrAddressNotAllowed naming the address", tc.ip, err)
		}
	}
}

// fakeDNS is a resolver whose answers come from a map (host -> address), for
// public-looking names that resolve to internal addresses. It speaks DNS over
// an in-memory stream, so no packet leaves the test.
func fakeDNS(t *testing.T, answers map[string]string) *net.Resolver {
	t.Helper()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, answers)
		return client, nil
	}}
}

func serveDNS(c net.Conn, answers map[string]string) {
	defer c.Close()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf) != nil || len(q.Questions) != 1 {
			return
		}
		qq := q.Questions[0]
		resp := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true}, Questions: q.Questions}
		if a, ok := answers[strings.TrimSuffix(qq.Name.String(), ".")]; ok {
			ip := netip.MustParseAddr(a)
			h := dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case qq.Type == dnsmessage.TypeA && ip.Is4():
				h.Type = dnsmessage.TypeA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: ip.As4()}})
			case qq.Type == dnsmessage.TypeAAAA && ip.Is6():
				h.Type = dnsmessage.TypeAAAA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: ip.As16()}})
			}
		} else {
			resp.RCode = dnsmessage.RCodeNameError
		}
		out, err := resp.Pack()
		if err != nil {
			return
		}
		if binary.Write(c, binary.BigEndian, uint16(len(out))) != nil {
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// guardedAMP is an AMP client over a product on loopback. hosts decides the
// loopback switch: a policy without a loopback host keeps data off loopback.
func guardedAMP(t *testing.T, hosts []string, opts ...AMPOption) (*AMP, *producttest.Server) {
	t.Helper()
	site := producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret})
	p, err := connect.NewHostPolicy(hosts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := New(Config{AppKey: testAppKey, Hosts: p, MaxAttempts: 1}, staticTargets{baseURL: site.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]AMPOption{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	return NewAMP(pc, nil, opts...), site
}

func assertRefused(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: accepted, want ErrAddressNotAllowed", what)
	case !errors.Is(err, ErrAddressNotAllowed):
		t.Errorf("%s: err = %v, want ErrAddressNotAllowed", what, err)
	case !Final(err):
		t.Errorf("%s: %v is not final; a refused address must not be retried", what, err)
	case strings.Contains(err.Error(), "SIG"):
		t.Errorf("%s: error leaks the presigned query: %v", what, err)
	}
}

// Data URLs pointing inside the network are refused, whether the worker may
// reach loopback (the tests' and local development's CONNECT_PRODUCT_HOSTS)
// or not (production).
func TestOpenData_RefusesInternalDataURLs(t *testing.T) {
	s3 := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("storage on loopback was reached: %s", r.URL.Path)
	}))
	t.Cleanup(s3.Close)
	tests := []struct {
		name  string
		hosts []string
		url   string
	}{
		{"metadata over https", []string{"127.0.0.1"}, "https://169.254.169.254/latest/meta-data/iam?SIG=1"},
		{"metadata over http", []string{"127.0.0.1"}, "http://169.254.169.254/latest/meta-data/?SIG=1"},
		{"RFC 1918", []string{"127.0.0.1"}, "https://10.0.0.5/bucket/k?SIG=1"},
		{"ULA metadata", []string{"127.0.0.1"}, "https://[fd00:ec2::254]/latest?SIG=1"},
		{"IPv4-mapped private", []string{"127.0.0.1"}, "https://[::ffff:192.168.0.1]/k?SIG=1"},
		{"plain http to a public host", []string{"127.0.0.1"}, "http://bucket.s3.amazonaws.com/k?SIG=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, site := guardedAMP(t, tc.hosts)
			site.SetHandler(jsonBody(200, map[string]string{"url": tc.url}))
			_, err := c.OpenData(t.Context(), ampClientKey, "k")
			assertRefused(t, tc.url, err)
		})
	}
	// Production: no loopback host in the policy, so loopback storage is
	// refused too, at dial time for a name.
	t.Run("loopback storage with a production policy", func(t *testing.T) {
		c := productionAMP(t)
		_, err := c.download(t.Context(), s3.URL+"/k?SIG=1")
		assertRefused(t, "https loopback", err)
		_, err = c.download(t.Context(), "https://localhost:1/k?SIG=1")
		assertRefused(t, "https localhost", err)
		_, err = c.download(t.Context(), strings.Replace(s3.URL, "https", "http", 1)+"/k?SIG=1")
		assertRefused(t, "http loopback", err)
	})
}

// productionAMP is an AMP client under a production host policy (no loopback
// host); its product is never called, only its download client.
func productionAMP(t *testing.T, opts ...AMPOption) *AMP {
	t.Helper()
	p, err := connect.NewHostPolicy([]string{"*.atlassian.net"})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := New(Config{AppKey: testAppKey, Hosts: p}, staticTargets{baseURL: "https://acme.atlassian.net"})
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]AMPOption{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	return NewAMP(pc, nil, opts...)
}

// A redirect from allowed storage to an internal address is refused at dial
// time, as is one to a public-looking host resolving inside.
func TestOpenData_RefusesRedirectsInside(t *testing.T) {
	s3 := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(s3.Close)
	site := producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret})
	hosts, _ := connect.NewHostPolicy([]string{"127.0.0.1"})
	pc, err := New(Config{AppKey: testAppKey, Hosts: hosts, MaxAttempts: 1}, staticTargets{baseURL: site.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	c := NewAMP(pc, s3.Client(), WithResolver(fakeDNS(t, map[string]string{"internal.example.com": "10.20.30.40"})),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	for _, to := range []string{
		"https://169.254.169.254/latest/meta-data/?SIG=2",
		"https://192.168.10.10/k?SIG=2",
		"https://internal.example.com/k?SIG=2",
		"http://127.0.0.1:1/k?SIG=2", // https -> http
	} {
		site.SetHandler(jsonBody(200, map[string]string{"url": s3.URL + "/moved?to=" + to}))
		_, err := c.OpenData(t.Context(), ampClientKey, "k")
		if to == "http://127.0.0.1:1/k?SIG=2" {
			if err == nil {
				t.Errorf("redirect to %s followed", to)
			}
			continue
		}
		assertRefused(t, "redirect to "+to, err)
	}
}

// An https host with a public-looking name whose DNS answer is internal is
// refused when dialled: the guard checks the address connected to, not the
// name.
func TestOpenData_RefusesPublicNamesResolvingInside(t *testing.T) {
	dns := fakeDNS(t, map[string]string{
		"bucket.s3.amazonaws.example": "10.0.0.7",
		"meta.example.com":            "169.254.169.254",
		"v6.example.com":              "fd00:ec2::254",
		"loop.example.com":            "127.0.0.1",
	})
	c := productionAMP(t, WithResolver(dns))
	for _, u := range []string{
		"https://bucket.s3.amazonaws.example/k?SIG=3",
		"https://meta.example.com/latest?SIG=3",
		"https://v6.example.com/latest?SIG=3",
		"https://loop.example.com/k?SIG=3",
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := c.download(ctx, u)
		cancel()
		assertRefused(t, u, err)
	}
}

func TestNewAMP_UnguardableTransportRefusesDownloads(t *testing.T) {
	site := producttest.New(t, producttest.Config{AppKey: testAppKey, Secret: testSecret})
	hosts, _ := connect.NewHostPolicy([]string{"127.0.0.1"})
	pc, err := New(Config{AppKey: testAppKey, Hosts: hosts}, staticTargets{baseURL: site.BaseURL()})
	if err != nil {
		t.Fatal(err)
	}
	called := false
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) { called = true; return nil, errors.New("unreachable") })
	c := NewAMP(pc, &http.Client{Transport: rt})
	_, err = c.download(t.Context(), "https://bucket.s3.amazonaws.com/k")
	assertRefused(t, "custom RoundTripper", err)
	if called {
		t.Error("the unguardable transport was used")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
