// Command atlassian plays Atlassian's side for the benchmark script: it serves an
// install public key on loopback, mints the signed requests the wrk Lua scripts
// replay (each a fresh token, since the receiver's replay guard binds a token to
// its body), and sends bounded install storms itself (each request exactly once,
// with a fixed number of concurrent connections).
//
//	atlassian genkey    -key F
//	atlassian keyserver -key F -addr 127.0.0.1:P
//	atlassian install   -key F -url RECEIVER -n N -prefix P [-one-site] [-conns 64]
//	atlassian mint      -key F -kind installed|enabled|migration -n N -tenants T -out F
//	atlassian pace      -url RECEIVER -db URL -rate R -duration D
//
// install prints "req/s non-2xx p50 p99" on stdout, as the script's wrk rows do.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

// kid is the key id of the one install key served.
const kid = "bench-install-key/1"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: atlassian genkey|keyserver|install|mint [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "genkey":
		err = genKey(args)
	case "keyserver":
		err = keyServer(args)
	case "install":
		err = installStorm(args)
	case "mint":
		err = mint(args)
	case "pace":
		err = pace(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "atlassian %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// common are the flags every command that signs shares.
type common struct {
	key      *string
	appKey   *string
	appBase  *string
	sitePort *int
}

func commonFlags(fs *flag.FlagSet) common {
	return common{
		key:      fs.String("key", "install-key.pem", "RSA private key file (genkey writes it)"),
		appKey:   fs.String("app-key", "bench-app", "CONNECT_APP_KEY of the receiver"),
		appBase:  fs.String("app-base", "http://127.0.0.1:18091", "CONNECT_BASE_URL of the receiver (aud of installs)"),
		sitePort: fs.Int("site-port", 30000, "first port of the sites' loopback baseUrls (nothing listens there)"),
	}
}

func genKey(args []string) error {
	fs := flag.NewFlagSet("genkey", flag.ContinueOnError)
	c := commonFlags(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(*c.key, b, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func loadKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("key file holds no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return k, nil
}

func keyServer(args []string) error {
	fs := flag.NewFlagSet("keyserver", flag.ContinueOnError)
	c := commonFlags(fs)
	addr := fs.String("addr", "127.0.0.1:18092", "loopback listen address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	k, err := loadKey(*c.key)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return fmt.Errorf("marshal public key: %w", err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.TrimPrefix(r.URL.Path, "/") != kid {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(pub)
		})}
	if err := srv.ListenAndServe(); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// secretOf is the shared secret of a bench tenant.
func secretOf(clientKey string) string {
	return "bench-shared-secret-" + clientKey + "-0123456789abcdef0123456789abcdef"
}

// signer mints Atlassian's tokens for requests to the receiver.
type signer struct {
	key     *rsa.PrivateKey
	appKey  string
	appBase string
}

// token signs a request of method to path: RS256 (signed install) when hs is
// empty, else HS256 with hs. offset lengthens exp by that many seconds, which
// makes tokens of one tenant and one iat distinct.
func (s signer) token(path string, iss string, hs []byte, iat time.Time, offset int) (string, error) {
	u, err := url.Parse(s.appBase + path)
	if err != nil {
		return "", fmt.Errorf("parse url: %w", err)
	}
	base, err := url.Parse(s.appBase)
	if err != nil {
		return "", fmt.Errorf("parse app base: %w", err)
	}
	claims := jwt.MapClaims{
		"iss": iss, "iat": iat.Unix(), "exp": iat.Add(3*time.Minute + time.Duration(offset)*time.Second).Unix(),
		"qsh": connect.QSH(http.MethodPost, u, base.Path),
	}
	if hs != nil {
		t, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(hs)
		if err != nil {
			return "", fmt.Errorf("sign HS256: %w", err)
		}
		return t, nil
	}
	claims["aud"] = s.appBase
	j := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	j.Header["kid"] = kid
	t, err := j.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign RS256: %w", err)
	}
	return t, nil
}

func (s signer) installBody(clientKey, baseURL string) ([]byte, error) {
	b, err := json.Marshal(map[string]any{
		"key": s.appKey, "clientKey": clientKey, "sharedSecret": secretOf(clientKey),
		"serverVersion": "100223", "pluginsVersion": "1001.0.0-SNAPSHOT",
		"baseUrl": baseURL, "displayUrl": baseURL, "productType": "jira",
		"description": "Atlassian JIRA at " + baseURL, "eventType": "installed",
	})
	if err != nil {
		return nil, fmt.Errorf("marshal install body: %w", err)
	}
	return b, nil
}

func siteURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// signed is one pre-minted request: its token and body.
type signed struct {
	token string
	body  []byte
}

// mintAll mints n requests with mk on every core, in order.
func mintAll(n int, mk func(i int) (signed, error)) ([]signed, error) {
	out := make([]signed, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.NumCPU())
	for range runtime.NumCPU() {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s, err := mk(i)
				if err != nil {
					errs <- err
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

func mint(args []string) error {
	fs := flag.NewFlagSet("mint", flag.ContinueOnError)
	c := commonFlags(fs)
	kind := fs.String("kind", "installed", "installed (RS256 re-installs), enabled (HS256) or migration (one HS256 token)")
	n := fs.Int("n", 10000, "requests to mint")
	tenants := fs.Int("tenants", 256, "tenants ck-0..ck-T-1 (installed by the seed storm) the requests spread over")
	out := fs.String("out", "requests.txt", "output: token TAB body, one a line")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	k, err := loadKey(*c.key)
	if err != nil {
		return err
	}
	s := signer{key: k, appKey: *c.appKey, appBase: *c.appBase}
	now := time.Now()
	// Tokens of one tenant differ by exp (up to 100 s longer) and, beyond
	// that, by an iat one second earlier: never later than the previous ones,
	// so every re-install is applied, not recorded as out of order.
	var mk func(i int) (signed, error)
	switch *kind {
	case "installed":
		mk = func(i int) (signed, error) {
			t := i % *tenants
			ck := fmt.Sprintf("ck-%d", t)
			body, err := s.installBody(ck, siteURL(*c.sitePort+t))
			if err != nil {
				return signed{}, err
			}
			round := i / *tenants
			tok, err := s.token("/installed", ck, nil, now.Add(time.Duration(round/100)*time.Second), round%100)
			return signed{tok, body}, err
		}
	case "enabled":
		mk = func(i int) (signed, error) {
			ck := fmt.Sprintf("ck-%d", i%*tenants)
			round := i / *tenants
			tok, err := s.token("/enabled", ck, []byte(secretOf(ck)), now.Add(time.Duration(round/100)*time.Second), round%100)
			return signed{tok, []byte(`{"clientKey":"` + ck + `","eventType":"enabled"}`)}, err
		}
	case "migration":
		// The qsh covers method and path only and migration events are not
		// bound to their body: one token serves every body the Lua script
		// makes (a distinct messageId each).
		*n = 1
		mk = func(int) (signed, error) {
			tok, err := s.token("/migration/events", "ck-0", []byte(secretOf("ck-0")), now, 0)
			return signed{tok, []byte("ck-0")}, err
		}
	default:
		return fmt.Errorf("unknown kind %q", *kind)
	}
	reqs, err := mintAll(*n, mk)
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("create %s: %w", *out, err)
	}
	w := bufio.NewWriter(f)
	for _, r := range reqs {
		fmt.Fprintf(w, "%s\t%s\n", r.token, r.body)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", *out, err)
	}
	return nil
}

// installStorm installs n tenants prefix-0..prefix-n-1, each exactly once, over
// conns concurrent connections, and prints req/s, non-2xx, p50 and p99.
func installStorm(args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	c := commonFlags(fs)
	target := fs.String("url", "http://127.0.0.1:18091", "receiver base URL to send to")
	n := fs.Int("n", 256, "tenants to install, each once")
	prefix := fs.String("prefix", "ck-", "clientKey prefix")
	oneSite := fs.Bool("one-site", false, "every tenant on one baseUrl (a site import) instead of one site each")
	conns := fs.Int("conns", 64, "concurrent connections")
	timeout := fs.Duration("timeout", 120*time.Second, "bound on the whole storm")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	k, err := loadKey(*c.key)
	if err != nil {
		return err
	}
	s := signer{key: k, appKey: *c.appKey, appBase: *c.appBase}
	now := time.Now()
	reqs, err := mintAll(*n, func(i int) (signed, error) {
		ck := fmt.Sprintf("%s%d", *prefix, i)
		site := *c.sitePort + i
		if *oneSite {
			site = *c.sitePort - 1
		}
		body, err := s.installBody(ck, siteURL(site))
		if err != nil {
			return signed{}, err
		}
		tok, err := s.token("/installed", ck, nil, now, 0)
		return signed{tok, body}, err
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res := send(ctx, *target+"/installed", reqs, *conns)
	fmt.Println(res)
	if res.failed > 0 {
		fmt.Fprintf(os.Stderr, "install storm: %d requests failed (%s)\n", res.failed, res.firstErr)
	}
	return nil
}

// result is one bounded run: what the script's rows print.
type result struct {
	n, non2xx, failed int
	elapsed           time.Duration
	lat               []time.Duration
	statuses          map[int]int
	firstErr          string
}

// String is "req/s non-2xx p50 p99" (latencies as wrk writes them).
func (r result) String() string {
	slices.Sort(r.lat)
	pct := func(p float64) string {
		if len(r.lat) == 0 {
			return "-"
		}
		return fmtLatency(r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))])
	}
	return fmt.Sprintf("%.2f %d %s %s", float64(r.n)/r.elapsed.Seconds(), r.non2xx+r.failed, pct(0.50), pct(0.99))
}

func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fus", float64(d)/float64(time.Microsecond))
	}
}

// send POSTs every request once over conns connections.
func send(ctx context.Context, target string, reqs []signed, conns int) result {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
		res  = result{statuses: map[int]int{}, lat: make([]time.Duration, 0, len(reqs))}
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) {
					return
				}
				t0 := time.Now()
				code, err := post(ctx, client, target, reqs[i])
				d := time.Since(t0)
				mu.Lock()
				res.n++
				switch {
				case err != nil:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				case code < 200 || code > 299:
					res.non2xx++
				}
				res.statuses[code]++
				res.lat = append(res.lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if len(res.statuses) > 1 || res.non2xx > 0 {
		fmt.Fprintf(os.Stderr, "statuses: %v\n", res.statuses)
	}
	return res
}

func post(ctx context.Context, client *http.Client, target string, r signed) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(r.body))
	if err != nil {
		return 0, fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("Authorization", "JWT "+r.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
