package product

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/connectrelay/connectrelay/connect"
)

// ErrAddressNotAllowed means a data download was refused before any byte was
// sent: its URL is not https, or its host resolved (directly, after a
// redirect, or through DNS) to an address the worker must not reach: loopback,
// private (RFC 1918, ULA), link-local (cloud metadata), shared, multicast,
// reserved or unspecified. Retrying cannot help.
var ErrAddressNotAllowed = errors.New("product: data download address not allowed")

// loopbackHosts are the hosts CONNECT_PRODUCT_HOSTS must list for the worker
// to download data from this machine: the switch that lets tests and local
// development play the product over http on loopback (see
// connect.HostPolicy.CheckBaseURL) lets them play its storage too.
var loopbackHosts = []string{"127.0.0.1", "::1", "localhost"}

// allowsLoopback reports whether the host policy explicitly names a loopback
// host (a glob such as "*" matching "localhost" does not count).
func allowsLoopback(p *connect.HostPolicy) bool {
	for _, g := range p.Globs() {
		if slices.Contains(loopbackHosts, g) {
			return true
		}
	}
	return false
}

// refusedPrefixes are the ranges that the netip predicates below do not cover
// and no storage service is reached on.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (CGNAT; Alibaba's metadata)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: would reach any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, ...)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: would reach any IPv4 address
}

// checkAddress says why ip must not be dialled for a download, or nil.
func checkAddress(ip netip.Addr, allowLoopback bool) error {
	ip = ip.Unmap()
	var why string
	switch {
	case !ip.IsValid():
		why = "not an IP address"
	case ip.IsLoopback():
		if allowLoopback {
			return nil
		}
		why = "loopback"
	case ip.IsUnspecified():
		why = "unspecified"
	case ip.IsPrivate():
		why = "private"
	case ip.IsLinkLocalUnicast():
		why = "link-local (cloud metadata)"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		why = "multicast"
	case ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "broadcast"
	default:
		for _, p := range refusedPrefixes {
			if p.Contains(ip) {
				why = "reserved (" + p.String() + ")"
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s is %s", ErrAddressNotAllowed, ip, why)
}

// addressGuard filters the connections of the download client at dial time:
// its Control sees the address actually being connected to, after DNS and for
// every redirect hop, so neither a DNS answer nor a redirect can lead the
// download to an internal address.
type addressGuard struct {
	allowLoopback bool
}

// control is a net.Dialer Control function.
func (g addressGuard) control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial address %q: %w", ErrAddressNotAllowed, address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: dial address %q is not an IP address", ErrAddressNotAllowed, address)
	}
	if !strings.HasPrefix(network, "tcp") {
		return fmt.Errorf("%w: network %q", ErrAddressNotAllowed, network)
	}
	return checkAddress(ip, g.allowLoopback)
}

// checkScheme requires https, or http for a loopback host when loopback is
// allowed.
func (g addressGuard) checkScheme(scheme, host string) error {
	switch {
	case scheme == "https":
		return nil
	case scheme == "http" && g.allowLoopback && slices.Contains(loopbackHosts, strings.ToLower(host)):
		return nil
	}
	return fmt.Errorf("%w: scheme %q for host %q; data URLs must be https", ErrAddressNotAllowed, scheme, host)
}

// guardedTransport returns a transport like rt (nil: http.DefaultTransport)
// whose every connection goes through the guard, direct: an HTTP proxy would
// make the guard check the proxy's address instead of the storage's, so
// downloads do not use HTTP_PROXY/HTTPS_PROXY. A RoundTripper that is not an
// *http.Transport cannot be guarded and is refused (ok false).
func (g addressGuard) guardedTransport(rt http.RoundTripper, resolver *net.Resolver) (tr *http.Transport, ok bool) {
	switch t := rt.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, false
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.control, Resolver: resolver}
	tr.Proxy = nil
	tr.DialContext = d.DialContext
	tr.DialTLSContext = nil // TLS on top of DialContext, so the guard sees it
	//lint:ignore SA1019 the deprecated hook is cleared so that it cannot bypass DialContext
	tr.DialTLS = nil
	return tr, true
}

// refusingTransport is the download transport when the one given cannot be
// guarded.
type refusingTransport struct{}

func (refusingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%w: the download client's transport is not an *http.Transport, so its connections cannot be checked", ErrAddressNotAllowed)
}
