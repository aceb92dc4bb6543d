package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/service"
)

// nodeLines collects the JSON lines the example backend prints.
type nodeLines struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (n *nodeLines) find(what string, match func(map[string]any) bool) map[string]any {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.lines {
		if l["what"] == what && (match == nil || match(l)) {
			return l
		}
	}
	return nil
}

// The Node example (examples/node) works against a real receiver and worker:
// it verifies forwarded events with the standardwebhooks npm package, imports
// an upload through the internal API, checks a page request through /v1/verify
// and calls Jira through /v1/sign. It needs node and the example's
// node_modules (cd examples/node && npm ci); without them it is skipped.
func TestNodeExample_BackendInAnotherLanguageDoesTheWholeJob(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	if _, err := os.Stat("../examples/node/node_modules/standardwebhooks"); err != nil {
		t.Skip("examples/node has no node_modules: run `npm ci` there to run this test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	e := newE2EWith(t, "", forwardingTo("http://127.0.0.1:"+strconv.Itoa(port)+"/atlassian/events"))

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "server.js")
	cmd.Dir = "../examples/node"
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "FORWARD_SECRET="+forwardSecret,
		"INTERNAL_URL="+e.internalURL, "INTERNAL_TOKEN="+internalToken, "APP_BASE_URL="+e.cfg.BaseURL)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	out := &nodeLines{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				out.mu.Lock()
				out.lines = append(out.lines, m)
				out.mu.Unlock()
			} else {
				t.Logf("node: %s", sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			out.mu.Lock()
			defer out.mu.Unlock()
			for _, l := range out.lines {
				t.Logf("node: %v", l)
			}
		}
	})
	eventually(t, 10*time.Second, "the example listening", func() bool { return out.find("listening", nil) != nil })

	const secret = "shared-secret-node-example-0123456789"
	amp := newAMPSite(t)
	amp.data["users.csv"] = []byte("id,name\n1,Ada\n")
	prod := newProduct(t, secret, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/rest/api/3/myself" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"accountId":"app-user"}`)
			return
		}
		amp.ServeHTTP(w, r)
	}))
	e.startWorker(service.WorkerOptions{})
	e.install("ck-node", prod, secret)
	// Events may be delivered out of order (concurrent delivery tasks); the
	// example applies tenant.installed, or drops it as stale when the later
	// tenant.license_changed (which carries the same tenant) came first.
	eventually(t, 60*time.Second, "the example hears tenant.installed", func() bool {
		return out.find("event", func(l map[string]any) bool { return l["type"] == "tenant.installed" && l["clientKey"] == "ck-node" }) != nil ||
			out.find("stale", func(l map[string]any) bool { return l["type"] == "tenant.installed" && l["clientKey"] == "ck-node" }) != nil &&
				out.find("event", func(l map[string]any) bool { return l["clientKey"] == "ck-node" }) != nil
	})

	for _, ev := range []map[string]any{
		ampEvent("listener-triggered", "tr-node", "m-1", "ck-node", "", ""),
		ampEvent("app-data-uploaded", "tr-node", "m-2", "ck-node", "users.csv", "final"),
	} {
		if code := e.hs256(handlers.PathMigrationEvents, "ck-node", secret, ev); code != http.StatusOK {
			t.Fatalf("%s = %d", ev["eventType"], code)
		}
	}
	eventually(t, 60*time.Second, "the example imported the upload and the transfer settled", func() bool {
		return out.find("imported", func(l map[string]any) bool { return l["s3Key"] == "users.csv" && l["bytes"] == float64(14) }) != nil &&
			out.find("event", func(l map[string]any) bool { return l["type"] == "migration.transfer_settled" }) != nil
	})

	// A page Jira loads in an iframe, through the vendor's reverse proxy: the
	// public URL is the app's base URL.
	page, _ := url.Parse(e.cfg.BaseURL + "/panel?xdm_e=" + url.QueryEscape(prod.BaseURL()) + "&lic=active")
	req, _ := http.NewRequest(http.MethodGet, page.String(), nil)
	tok := e.atl.Sign(t, req, e.cfg.BaseURL, atlassiantest.Token{Alg: "HS256", Issuer: "ck-node", Secret: []byte(secret)})
	direct := "http://127.0.0.1:" + strconv.Itoa(port) + page.RequestURI() + "&jwt=" + tok
	if code := get(t, direct); code != http.StatusOK {
		t.Fatalf("panel with a good token = %d", code)
	}
	forged := e.atl.Sign(t, req, e.cfg.BaseURL, atlassiantest.Token{Alg: "HS256", Issuer: "ck-node", Secret: []byte("not-the-secret-0123456789abcdef")})
	if code := get(t, "http://127.0.0.1:"+strconv.Itoa(port)+page.RequestURI()+"&jwt="+forged); code != http.StatusUnauthorized {
		t.Fatalf("panel with a forged token = %d, want 401", code)
	}
	if code := get(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/demo/myself?clientKey=ck-node"); code != http.StatusOK {
		t.Fatalf("calling Jira through /v1/sign = %d", code)
	}
	// The example logs the call on its stdout, which a goroutine of this
	// test reads: the line may land just after the HTTP answer.
	eventually(t, 10*time.Second, "the example logs its Jira call", func() bool {
		return out.find("jira", nil) != nil
	})
	if l := out.find("jira", nil); l["status"] != float64(200) {
		t.Fatalf("the example's Jira call: %v", l)
	}
	if out.find("refused", nil) != nil {
		t.Fatal("the example refused a delivery's signature")
	}
	if !strings.Contains(strings.Join(amp.statuses(), " "), "SUCCESS") {
		t.Fatalf("progress %v: the transfer did not settle SUCCESS", amp.statuses())
	}
}

func get(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
