package ctl

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

// The published "Simple" vector of docs/protocol.md#query-string-hash.
const (
	vecSecret = "7512836e-9137-48ac-baaf-a1935b96e17a"
	vecToken  = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJxc2giOiJiZTE2OTEwODU4YTQxZmQxOWVhNWMxYjRlOWRlY2NhOWE3ODRkMTAyNGNiMDBiMjE1OGRlZmUyZjI5ZGM4NmRkIiwiY29udGV4dCI6e30sImlzcyI6ImppcmE6MTIzNC01Njc4LTkwMDAiLCJleHAiOjE0NjY3MzEyNTUsImlhdCI6MTQ2NjczMTA3NX0.ssbmLUBemh6nQW3MH5o2fSdnOFTIKf2w0KASnnH8aXo"
	vecURL    = "https://example.com/test?param=value"
	vecQSH    = "be16910858a41fd19ea5c1b4e9decca9a784d1024cb00b2158defe2f29dc86dd"
)

var (
	in2016 = func() time.Time { return time.Unix(1466731075+10, 0) }
	today  = func() time.Time { return time.Unix(1_790_000_000, 0) }
)

func run(t *testing.T, env map[string]string, now func() time.Time, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(args, func(k string) string { return env[k] }, &stdout, &stderr, now)
	return code, stdout.String(), stderr.String()
}

func TestRunQSH(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"published vector", []string{"qsh", "GET", vecURL}, ExitOK, []string{"canonical request: GET&/test&param=value", "qsh:               " + vecQSH}},
		{"lower-case method", []string{"qsh", "post", "https://app.example.com/installed"}, ExitOK, []string{"POST&/installed&", "4a2e1de8ca74e6cafe8862d332fa3ac7a8e51e692bc6d798ea4dfedc14948bf4"}},
		{"base URL after the positionals", []string{"qsh", "POST", "https://app.example.com/addon/installed", "--base-url", "https://app.example.com/addon"}, ExitOK,
			[]string{"POST&/installed&", "4a2e1de8ca74e6cafe8862d332fa3ac7a8e51e692bc6d798ea4dfedc14948bf4"}},
		{"base URL before the positionals", []string{"qsh", "--base-url=https://x.atlassian.net/wiki", "GET", "https://x.atlassian.net/wiki/rest/api/3/myself"}, ExitOK,
			[]string{"GET&/rest/api/3/myself&", "c790e863cecddbf1369d5e058d5f71d9d19741a497a6e4681351909109759513"}},
		{"missing URL", []string{"qsh", "GET"}, ExitUsage, nil},
		{"unknown flag", []string{"qsh", "GET", vecURL, "--nope"}, ExitUsage, nil},
		{"bad URL", []string{"qsh", "GET", "http://a b/%zz"}, ExitUsage, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := run(t, nil, today, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; output:\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestRunJWTDecode(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	installURL, _ := url.Parse("https://app.example.com/installed")
	rsTok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "jira:c", "aud": "https://app.example.com", "exp": today().Add(time.Minute).Unix(),
		"qsh": connect.QSH("POST", installURL, ""),
	})
	rsTok.Header["kid"] = "kid-1"
	rs, err := rsTok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	none := enc64(`{"alg":"none"}`) + "." + enc64(`{"iss":"x","exp":9999999999,"qsh":"context-qsh"}`) + "."
	ctxTok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "x", "exp": today().Add(time.Minute).Unix(), "qsh": "context-qsh"}).SignedString([]byte(vecSecret))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		env      map[string]string
		now      func() time.Time
		args     []string
		wantCode int
		want     []string
		notWant  []string
	}{
		{name: "vector verifies in 2016 with the secret from the environment", env: map[string]string{SecretEnv: vecSecret}, now: in2016,
			args: []string{"jwt", "decode", vecToken, "--url", vecURL}, wantCode: ExitOK,
			want: []string{`"iss": "jira:1234-5678-9000"`, `"alg": "HS256"`, "2016-06-24T01:20:55Z", "signature  ok", "exp        ok", "qsh        ok",
				"service verdict (connect.HS256Verifier, lifecycle/webhook policy): accepted", "result: ok"}},
		{name: "expired today", env: map[string]string{SecretEnv: vecSecret}, now: today,
			args: []string{"jwt", "decode", vecToken, "--url", vecURL}, wantCode: ExitFailed,
			want: []string{"exp        FAIL", "expired", "refused: connect: jwt expired", "result: FAIL"}},
		{name: "wrong secret flag", now: in2016, args: []string{"jwt", "decode", "--secret", "not-the-secret", vecToken}, wantCode: ExitFailed,
			want: []string{"signature  FAIL", "does not verify"}, notWant: []string{"not-the-secret"}},
		{name: "qsh mismatch shows both hashes and our canonical request", env: map[string]string{SecretEnv: vecSecret}, now: in2016,
			args: []string{"jwt", "decode", vecToken, "--method", "POST", "--url", "https://example.com/test?param=other"}, wantCode: ExitFailed,
			want: []string{"qsh        FAIL", "claim qsh:         " + vecQSH, "computed qsh:", "canonical request: POST&/test&param=other", "refused: connect: jwt qsh does not match"}},
		{name: "no secret, no url: checks skipped", now: in2016, args: []string{"jwt", "decode", "JWT " + vecToken}, wantCode: ExitOK,
			want: []string{"signature  skipped", "qsh        skipped", "result: ok"}},
		{name: "alg none", now: today, args: []string{"jwt", "decode", none}, wantCode: ExitFailed,
			want: []string{"alg        FAIL", `header alg "none"`}},
		{name: "context token", env: map[string]string{SecretEnv: vecSecret}, now: today, args: []string{"jwt", "decode", ctxTok}, wantCode: ExitOK,
			want: []string{"context token", "refused on lifecycle"}},
		{name: "RS256 install with public key", now: today, args: []string{"jwt", "decode", rs, "--public-key", pemFile, "--method", "POST", "--url", "https://app.example.com/installed"}, wantCode: ExitOK,
			want: []string{"RS256: signed install", `kid "kid-1"`, "RS256 signature verifies", "qsh        ok"}},
		{name: "RS256 install with the wrong public key file", now: today, args: []string{"jwt", "decode", rs, "--public-key", filepath.Join(t.TempDir(), "missing.pem")}, wantCode: ExitFailed,
			want: []string{"signature  FAIL"}},
		{name: "garbage", now: today, args: []string{"jwt", "decode", "not-a-token"}, wantCode: ExitFailed, want: []string{"cannot decode token"}},
		{name: "huge garbage", now: today, args: []string{"jwt", "decode", strings.Repeat("x", 10<<10)}, wantCode: ExitFailed, want: []string{"cannot decode token"}},
		{name: "no token", now: today, args: []string{"jwt", "decode"}, wantCode: ExitUsage},
		{name: "unknown command", now: today, args: []string{"jwt", "encode"}, wantCode: ExitUsage},
		{name: "no command", now: today, args: nil, wantCode: ExitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.env, tc.now, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; output:\n%s%s", code, tc.wantCode, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range append(tc.notWant, vecSecret) {
				if strings.Contains(out+errOut, w) {
					t.Errorf("output contains %q:\n%s", w, out+errOut)
				}
			}
		})
	}
}

func enc64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
