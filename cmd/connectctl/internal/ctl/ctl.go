// Package ctl implements connectctl, the Connect JWT debugging tool: it
// prints canonical requests and query string hashes, and decodes a token and
// explains which check fails and why; its operator commands (ops.go) read
// the service's tenants, transfers and task archive; simulate runs a local
// Atlassian (internal/simulator) against the app. main only wires it to the
// process.
package ctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

// SecretEnv is the environment variable the shared secret may come from, so
// that it stays out of shell history and process listings.
const SecretEnv = "CONNECTCTL_SECRET"

// Exit codes of Run.
const (
	ExitOK     = 0 // success; for jwt decode: every check that ran passed
	ExitFailed = 1 // a check failed or the token cannot be decoded
	ExitUsage  = 2 // bad command line
	// ExitInterrupted: simulate was stopped by SIGINT or SIGTERM (128+SIGINT).
	ExitInterrupted = 130
)

const usage = `usage:
  connectctl qsh METHOD URL [--base-url U]
      print the canonical request and its qsh (U: app or product base URL
      whose path is stripped, e.g. https://x.atlassian.net/wiki)
  connectctl jwt decode TOKEN [--method M] [--url U] [--base-url B] [--secret S] [--public-key FILE]
      print header and claims and check alg, signature (with --secret or
      $CONNECTCTL_SECRET for HS256, --public-key for RS256), exp and qsh
      (with --url). The secret is never printed.
  connectctl simulate [SCENARIO...] [--listen ADDR] [--app URL] [--json] [--print-env] ...
      a local Atlassian playing scenarios against the app (connectctl simulate -h)
`

// Env gives Run the process environment; os.Getenv in production.
type Env func(key string) string

// Run executes connectctl with args (without the program name) and returns
// the exit code. now is the clock used for exp checks.
func Run(args []string, env Env, stdout, stderr io.Writer, now func() time.Time) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch {
	case args[0] == "qsh":
		return runQSH(args[1:], stdout, stderr)
	case args[0] == "jwt" && len(args) > 1 && args[1] == "decode":
		return runDecode(args[2:], env, stdout, stderr, now)
	case args[0] == "simulate":
		return runSimulate(args[1:], env, stdout, stderr)
	case isOpsCommand(args[0]):
		return runOps(args, env, stdout, stderr, now)
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage+opsUsage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "connectctl: unknown command %q\n%s", strings.Join(args[:min(2, len(args))], " "), usage)
		return ExitUsage
	}
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("qsh GET URL --base-url B").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runQSH(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("qsh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("base-url", "", "app or product base URL whose path is stripped")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return ExitUsage
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "connectctl qsh: want METHOD URL, got %d arguments\n%s", len(pos), usage)
		return ExitUsage
	}
	u, basePath, err := parseTarget(pos[1], *baseURL)
	if err != nil {
		fmt.Fprintf(stderr, "connectctl qsh: %v\n", err)
		return ExitUsage
	}
	canonical := connect.CanonicalRequest(pos[0], u, basePath)
	fmt.Fprintf(stdout, "canonical request: %s\nqsh:               %s\n", canonical, connect.QSH(pos[0], u, basePath))
	return ExitOK
}

// parseTarget parses the request URL and the base path to strip.
func parseTarget(rawURL, baseURL string) (*url.URL, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("URL: %w", err)
	}
	basePath := ""
	if baseURL != "" {
		b, err := url.Parse(baseURL)
		if err != nil {
			return nil, "", fmt.Errorf("base URL: %w", err)
		}
		basePath = b.EscapedPath()
	}
	return u, basePath, nil
}

// check is one line of the report.
type check struct {
	name, status, detail string
}

const (
	statusOK      = "ok"
	statusFail    = "FAIL"
	statusSkipped = "skipped"
)

func runDecode(args []string, env Env, stdout, stderr io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("jwt decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	method := fs.String("method", "GET", "HTTP method of the request the token was sent with")
	rawURL := fs.String("url", "", "full URL of the request the token was sent with (enables the qsh check)")
	baseURL := fs.String("base-url", "", "app (or product) base URL whose path is stripped before hashing")
	secretFlag := fs.String("secret", "", "HS256 shared secret (prefer $"+SecretEnv+")")
	publicKey := fs.String("public-key", "", "PEM file of the RS256 install public key")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return ExitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "connectctl jwt decode: want one TOKEN, got %d arguments\n%s", len(pos), usage)
		return ExitUsage
	}
	secret := *secretFlag
	if secret == "" {
		secret = env(SecretEnv)
	}
	tok := strings.TrimSpace(pos[0])
	if rest, ok := strings.CutPrefix(tok, "JWT "); ok {
		tok = strings.TrimSpace(rest)
	}

	d, err := decode(tok)
	if err != nil {
		fmt.Fprintf(stdout, "cannot decode token: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(stdout, "header:\n%s\nclaims:\n%s\n", indent(d.header), indent(d.payload))
	t := now()
	if times := d.times(t); times != "" {
		fmt.Fprintf(stdout, "times (now %s):\n%s", t.UTC().Format(time.RFC3339), times)
	}

	checks := []check{d.checkAlg()}
	checks = append(checks, d.checkSignature(secret, *publicKey))
	checks = append(checks, d.checkExp(t))
	qshCheck, qshDetail := d.checkQSH(*method, *rawURL, *baseURL)
	checks = append(checks, qshCheck)

	fmt.Fprintln(stdout, "checks:")
	failed := false
	for _, c := range checks {
		fmt.Fprintf(stdout, "  %-10s %-8s %s\n", c.name, c.status, c.detail)
		failed = failed || c.status == statusFail
	}
	if qshDetail != "" {
		fmt.Fprint(stdout, qshDetail)
	}
	if secret != "" && *rawURL != "" && d.alg == "HS256" {
		fmt.Fprintf(stdout, "service verdict (connect.HS256Verifier, lifecycle/webhook policy): %s\n", serviceVerdict(tok, *method, *rawURL, *baseURL, secret, t))
	}
	if failed {
		fmt.Fprintln(stdout, "result: FAIL")
		return ExitFailed
	}
	fmt.Fprintln(stdout, "result: ok (for the checks that ran)")
	return ExitOK
}

// decoded is a token split and decoded without verification.
type decoded struct {
	raw             string
	header, payload []byte
	alg, kid        string
	claims          map[string]any
	signingInput    string
	signature       []byte
}

func decode(tok string) (*decoded, error) {
	if len(tok) > connect.MaxTokenLength {
		return nil, fmt.Errorf("token is %d bytes, more than %d", len(tok), connect.MaxTokenLength)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("want 3 dot-separated segments, got %d", len(parts))
	}
	d := &decoded{raw: tok, signingInput: parts[0] + "." + parts[1]}
	var err error
	if d.header, err = b64(parts[0]); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if d.payload, err = b64(parts[1]); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if d.signature, err = b64(parts[2]); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	var h struct {
		Alg any `json:"alg"`
		Kid any `json:"kid"`
	}
	if err := json.Unmarshal(d.header, &h); err != nil {
		return nil, fmt.Errorf("header is not JSON: %w", err)
	}
	d.alg, _ = h.Alg.(string)
	d.kid, _ = h.Kid.(string)
	dec := json.NewDecoder(bytes.NewReader(d.payload))
	dec.UseNumber()
	if err := dec.Decode(&d.claims); err != nil {
		return nil, fmt.Errorf("claims are not a JSON object: %w", err)
	}
	return d, nil
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func indent(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "  ", "  "); err != nil {
		return "  " + string(b)
	}
	return "  " + out.String()
}

// times renders the time claims readably.
func (d *decoded) times(now time.Time) string {
	var b strings.Builder
	for _, name := range []string{"iat", "nbf", "exp"} {
		ts, ok := d.numericClaim(name)
		if !ok {
			continue
		}
		rel := ts.Sub(now)
		when := "in " + human(rel)
		if rel < 0 {
			when = human(-rel) + " ago"
		}
		fmt.Fprintf(&b, "  %-4s %d  %s  (%s)\n", name, ts.Unix(), ts.UTC().Format(time.RFC3339), when)
	}
	return b.String()
}

func (d *decoded) numericClaim(name string) (time.Time, bool) {
	n, ok := d.claims[name].(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

func (d *decoded) checkAlg() check {
	switch d.alg {
	case "HS256":
		return check{"alg", statusOK, "HS256: product->app call or app->product call, verified with the tenant shared secret"}
	case "RS256":
		return check{"alg", statusOK, fmt.Sprintf("RS256: signed install (installed/uninstalled only), kid %q", d.kid)}
	default:
		return check{"alg", statusFail, fmt.Sprintf("header alg %q: Connect accepts only HS256, and RS256 for signed installs", d.alg)}
	}
}

func (d *decoded) checkSignature(secret, publicKeyFile string) check {
	switch d.alg {
	case "HS256":
		if secret == "" {
			return check{"signature", statusSkipped, "give --secret or $" + SecretEnv}
		}
		if err := jwt.SigningMethodHS256.Verify(d.signingInput, d.signature, []byte(secret)); err != nil {
			return check{"signature", statusFail, "HMAC-SHA256 does not verify with the given secret (wrong or rotated secret, or tampered token)"}
		}
		return check{"signature", statusOK, "HMAC-SHA256 verifies with the given secret"}
	case "RS256":
		if publicKeyFile == "" {
			return check{"signature", statusSkipped, fmt.Sprintf("give --public-key with the install key for kid %q", d.kid)}
		}
		pemBytes, err := os.ReadFile(publicKeyFile)
		if err != nil {
			return check{"signature", statusFail, fmt.Sprintf("read public key: %v", err)}
		}
		key, err := connect.ParsePublicKeyPEM(pemBytes)
		if err != nil {
			return check{"signature", statusFail, fmt.Sprintf("public key: %v", err)}
		}
		if err := jwt.SigningMethodRS256.Verify(d.signingInput, d.signature, key); err != nil {
			return check{"signature", statusFail, "RS256 signature does not verify with the given public key"}
		}
		return check{"signature", statusOK, "RS256 signature verifies with the given public key"}
	default:
		return check{"signature", statusFail, "not checked: the algorithm is not acceptable"}
	}
}

func (d *decoded) checkExp(now time.Time) check {
	exp, ok := d.numericClaim("exp")
	if !ok {
		return check{"exp", statusFail, "no numeric exp claim: Connect tokens must expire"}
	}
	leeway := connect.DefaultLeeway
	if !now.Before(exp.Add(leeway)) {
		return check{"exp", statusFail, fmt.Sprintf("expired %s ago at %s (leeway %s)",
			human(now.Sub(exp)), exp.UTC().Format(time.RFC3339), leeway)}
	}
	if nbf, ok := d.numericClaim("nbf"); ok && now.Add(leeway).Before(nbf) {
		return check{"exp", statusFail, fmt.Sprintf("not valid before %s", nbf.UTC().Format(time.RFC3339))}
	}
	return check{"exp", statusOK, fmt.Sprintf("valid until %s", exp.UTC().Format(time.RFC3339))}
}

// checkQSH compares the qsh claim with the request; on mismatch it returns
// both hashes and our canonical request so the difference can be found.
func (d *decoded) checkQSH(method, rawURL, baseURL string) (check, string) {
	claim, _ := d.claims["qsh"].(string)
	switch {
	case claim == "":
		return check{"qsh", statusFail, "no qsh claim"}, ""
	case claim == connect.ContextQSH:
		return check{"qsh", statusOK, "context token (qsh \"context-qsh\"): accepted only on browser->app endpoints, refused on lifecycle, webhook and migration endpoints"}, ""
	case rawURL == "":
		return check{"qsh", statusSkipped, "give --method and --url (and --base-url if the app base URL has a path)"}, ""
	}
	u, basePath, err := parseTarget(rawURL, baseURL)
	if err != nil {
		return check{"qsh", statusFail, err.Error()}, ""
	}
	canonical := connect.CanonicalRequest(method, u, basePath)
	computed := connect.QSH(method, u, basePath)
	if computed == claim {
		return check{"qsh", statusOK, fmt.Sprintf("matches %q", canonical)}, ""
	}
	detail := fmt.Sprintf("    claim qsh:         %s\n    computed qsh:      %s\n    canonical request: %s\n", claim, computed, canonical)
	hint := "the token was made for another method, path or query"
	if basePath == "" && u.EscapedPath() != "" && u.EscapedPath() != "/" {
		hint += " (or the app base URL has a path: try --base-url)"
	}
	return check{"qsh", statusFail, hint}, detail
}

// serviceVerdict runs the service's own verifier on the token, so the tool
// says exactly what the receiver would.
func serviceVerdict(tok, method, rawURL, baseURL, secret string, now time.Time) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "not run: --url must be absolute"
	}
	if baseURL == "" {
		baseURL = u.Scheme + "://" + u.Host
	}
	v, err := connect.NewHS256Verifier(connect.HS256Config{
		AppBaseURLs: []string{baseURL},
		Secrets:     anyTenant(secret),
		Now:         func() time.Time { return now },
	})
	if err != nil {
		return "not run: " + err.Error()
	}
	r, err := http.NewRequestWithContext(context.Background(), method, rawURL, nil)
	if err != nil {
		return "not run: " + err.Error()
	}
	r.Header.Set("Authorization", "JWT "+tok)
	if _, err := v.Verify(r.Context(), r, connect.QSHComputed); err != nil {
		return "refused: " + err.Error()
	}
	return "accepted"
}

// anyTenant is a SecretStore that has the given secret for every issuer.
type anyTenant string

// SharedSecret returns the one secret whatever the issuer.
func (s anyTenant) SharedSecret(context.Context, string, bool) ([]byte, error) {
	if s == "" {
		return nil, errors.New("no secret")
	}
	return []byte(s), nil
}

// human renders a non-negative duration for people: seconds precision, and
// days once it is longer than two days.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 48*time.Hour {
		return d.String()
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%s", days, (d - days*24*time.Hour).Round(time.Hour))
}
