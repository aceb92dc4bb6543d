package ctl

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSimulate_PrintEnvNamesTheKeyServerAndTheHost(t *testing.T) {
	for _, c := range []struct{ listen, want string }{
		{"", "CONNECT_KEYS_CDN_URL=http://127.0.0.1:8090/keys\nCONNECT_PRODUCT_HOSTS=127.0.0.1\n"},
		{"0.0.0.0:9000", "CONNECT_KEYS_CDN_URL=http://127.0.0.1:9000/keys\nCONNECT_PRODUCT_HOSTS=127.0.0.1\n"},
		{"localhost:8095", "CONNECT_KEYS_CDN_URL=http://localhost:8095/keys\nCONNECT_PRODUCT_HOSTS=localhost\n"},
	} {
		args := []string{"simulate", "--print-env"}
		if c.listen != "" {
			args = append(args, "--listen", c.listen)
		}
		code, out, errOut := run(t, nil, today, args...)
		if code != ExitOK || out != c.want {
			t.Errorf("%v: code %d, stdout %q (stderr %q), want %q", args, code, out, errOut, c.want)
		}
	}
}

func TestSimulate_BadInputIsAUsageErrorNamingTheArgument(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--uploads", "0"}, "--uploads 0"},
		{[]string{"--tenants", "-1"}, "--tenants -1"},
		{[]string{"--big", "12XB"}, `--big "12XB"`},
		{[]string{"--big", "0"}, `--big "0"`},
		{[]string{"--cancel", "--listener-errored"}, "--cancel and --listener-errored"},
		{[]string{"--timeout", "0s"}, "--timeout 0s"},
		{[]string{"no-such-scenario"}, `unknown scenario "no-such-scenario"`},
		{[]string{"--listen", "127.0.0.1:0"}, `--listen "127.0.0.1:0": a fixed port`},
		{[]string{"--app", "ftp://x", "install"}, `--app "ftp://x"`},
		{[]string{"--print-env", "--listen", "nohost"}, `--listen "nohost"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		code, _, errOut := run(t, nil, today, append([]string{"simulate"}, c.args...)...)
		if code != ExitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d, stderr %q, want exit 2 naming %q", c.args, code, errOut, c.want)
		}
		if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines != 0 {
			t.Errorf("%v: %d-line error, want one line: %q", c.args, lines+1, errOut)
		}
	}
}

func TestSimulate_AnAppThatDoesNotAnswerFailsWithExitOne(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	app := httptest.NewServer(http.NotFoundHandler())
	defer app.Close()
	code, out, errOut := run(t, nil, today, "simulate", "--listen", addr, "--app", app.URL, "install")
	if code != ExitFailed || !strings.Contains(out, "atlassian-connect.json = 404") {
		t.Errorf("code %d, stdout %q, stderr %q; want exit 1 naming the descriptor's 404", code, out, errOut)
	}
}
