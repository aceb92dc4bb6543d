package ctl

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay/internal/simulator"
)

func TestSimulate_PrintEnvNamesTheKeyServerTheHostAndForge(t *testing.T) {
	forgeEnv := func(origin, host, app string) string {
		return "FORGE_APP_ID=" + app + "\nFORGE_JWKS_URL=" + origin + "/forge/jwks.json\nFORGE_API_HOSTS=" + host + "\n"
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "CONNECT_KEYS_CDN_URL=http://127.0.0.1:8090/keys\nCONNECT_PRODUCT_HOSTS=127.0.0.1\n" +
			forgeEnv("http://127.0.0.1:8090", "127.0.0.1", simulator.DefaultForgeAppID)},
		{[]string{"--listen", "0.0.0.0:9000"}, "CONNECT_KEYS_CDN_URL=http://127.0.0.1:9000/keys\nCONNECT_PRODUCT_HOSTS=127.0.0.1\n" +
			forgeEnv("http://127.0.0.1:9000", "127.0.0.1", simulator.DefaultForgeAppID)},
		{[]string{"--listen", "localhost:8095"}, "CONNECT_KEYS_CDN_URL=http://localhost:8095/keys\nCONNECT_PRODUCT_HOSTS=localhost\n" +
			forgeEnv("http://localhost:8095", "localhost", simulator.DefaultForgeAppID)},
		{[]string{"--forge-app-id", "8db33809-1f32-48bb-8c52-5877dab48107"}, "CONNECT_KEYS_CDN_URL=http://127.0.0.1:8090/keys\nCONNECT_PRODUCT_HOSTS=127.0.0.1\n" +
			forgeEnv("http://127.0.0.1:8090", "127.0.0.1", "ari:cloud:ecosystem::app/8db33809-1f32-48bb-8c52-5877dab48107")},
	} {
		args := append([]string{"simulate", "--print-env"}, c.args...)
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
		{[]string{"--forge-app-id", "my-app", "forge-install"}, `--forge-app-id "my-app"`},
		{[]string{"--print-env", "--forge-app-id", "ari:cloud:ecosystem::app/NOT-A-UUID"}, `--forge-app-id "ari:cloud:ecosystem::app/NOT-A-UUID"`},
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
