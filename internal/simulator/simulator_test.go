package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectrelay/connectrelay/connect"
)

const testAppKey = "com.example.sim-test"

// newTestSimulator starts a simulator whose descriptor is already known.
func newTestSimulator(t *testing.T) *Simulator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{App: "http://127.0.0.1:1"}, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	s.desc = descriptor{Key: testAppKey, BaseURL: "http://127.0.0.1:1"}
	return s
}

// token mints an app->product token with the given claims changes.
func token(t *testing.T, method string, u *url.URL, base, secret string, edit func(jwt.MapClaims)) string {
	t.Helper()
	b, _ := url.Parse(base)
	now := time.Now()
	c := jwt.MapClaims{"iss": testAppKey, "iat": now.Unix(), "exp": now.Add(3 * time.Minute).Unix(),
		"qsh": connect.QSH(method, u, b.EscapedPath())}
	if edit != nil {
		edit(c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSite_VerifiesEveryWorkerCall(t *testing.T) {
	s := newTestSimulator(t)
	si, st := s.newSite("ck-1", "the-current-secret-0123456789abcdef")
	st.oldSecrets = []string{"the-rotated-secret-0123456789abcdef"}
	base := s.baseURL(si.name)
	path := base + pathAddons + testAppKey
	u, _ := url.Parse(path)
	cases := []struct {
		name   string
		auth   func() string
		status int
		reason string
	}{
		{"valid", func() string { return "JWT " + token(t, "GET", u, base, st.secret, nil) }, http.StatusOK, ""},
		{"no header", func() string { return "" }, http.StatusUnauthorized, "no Authorization: JWT header"},
		{"another issuer", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) { c["iss"] = "someone-else" })
		}, http.StatusUnauthorized, "someone-else"},
		{"qsh of another path", func() string {
			other, _ := url.Parse(base + pathWebhook)
			return "JWT " + token(t, "GET", other, base, st.secret, nil)
		}, http.StatusUnauthorized, "qsh"},
		{"qsh hashing the site's base path", func() string {
			b, _ := url.Parse(s.origin)
			return "JWT " + token(t, "GET", u, b.String(), st.secret, nil)
		}, http.StatusUnauthorized, "qsh"},
		{"expired", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) {
				c["iat"], c["exp"] = time.Now().Add(-10*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
			})
		}, http.StatusUnauthorized, "expired"},
		{"lives longer than 3 minutes", func() string {
			return "JWT " + token(t, "GET", u, base, st.secret, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(10 * time.Minute).Unix() })
		}, http.StatusUnauthorized, ""},
		{"the rotated-away secret", func() string { return "JWT " + token(t, "GET", u, base, st.oldSecrets[0], nil) },
			http.StatusUnauthorized, "rotated-away secret"},
		{"an unknown secret", func() string { return "JWT " + token(t, "GET", u, base, "not-the-secret-0123456789abcdef", nil) },
			http.StatusUnauthorized, "JWT refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(st.matching(nil))
			req, _ := http.NewRequest(http.MethodGet, path, nil)
			if a := c.auth(); a != "" {
				req.Header.Set("Authorization", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			calls := st.matching(nil)
			if len(calls) != before+1 {
				t.Fatalf("recorded %d calls, want 1", len(calls)-before)
			}
			got := calls[len(calls)-1]
			if resp.StatusCode != c.status || (c.status == http.StatusOK) != (got.JWT == "") || !strings.Contains(got.JWT, c.reason) {
				t.Errorf("status %d, recorded reason %q; want %d and a reason containing %q", resp.StatusCode, got.JWT, c.status, c.reason)
			}
		})
	}
}

func TestSite_AnswersTheProductAPI(t *testing.T) {
	s := newTestSimulator(t)
	si, st := s.newSite("ck-1", "the-current-secret-0123456789abcdef")
	st.uploads["sim/k1"] = &upload{label: "final", size: 300 << 10}
	base := s.baseURL(si.name)
	call := func(method, rel, body string) (int, string) {
		t.Helper()
		u, _ := url.Parse(base + rel)
		req, _ := http.NewRequest(method, u.String(), strings.NewReader(body))
		req.Header.Set("Authorization", "JWT "+token(t, method, u, base, st.secret, nil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call("GET", pathAddons+testAppKey, ""); code != 200 || !strings.Contains(body, `"active":true`) {
		t.Errorf("license = %d %s", code, body)
	}
	if code, body := call("PUT", pathWebhook, `{"endpoints":["https://app.example/migration/events"]}`); code != 200 {
		t.Errorf("webhook PUT = %d %s", code, body)
	}
	if code, body := call("GET", pathWebhook, ""); code != 200 || !strings.Contains(body, "https://app.example/migration/events") {
		t.Errorf("webhook GET = %d %s", code, body)
	}
	code, body := call("GET", pathMigration+"/data/"+url.PathEscape("sim/k1"), "")
	var data struct{ URL string }
	if code != 200 || json.Unmarshal([]byte(body), &data) != nil || data.URL == "" {
		t.Fatalf("data URL = %d %s", code, body)
	}
	resp, err := http.Get(data.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var want bytes.Buffer
	_, _ = writeGenerated(&want, "sim/k1", 300<<10)
	st.mu.Lock()
	complete := st.uploads["sim/k1"].complete
	st.mu.Unlock()
	if len(b) != 300<<10 || !bytes.Equal(b, want.Bytes()) || complete != 1 {
		t.Errorf("presigned download: %d bytes (complete %d), want the generated %d", len(b), complete, 300<<10)
	}
	code, _ = call("POST", pathMigration+"/progress/tr-1", `{"status":"SUCCESS","percent":100}`)
	st.mu.Lock()
	progress := append([]string(nil), st.progress...)
	st.mu.Unlock()
	if code != 200 || len(progress) != 1 || progress[0] != "SUCCESS/100" {
		t.Errorf("progress = %d %v", code, progress)
	}
	for _, rel := range []string{pathMigration + "/mapping/tr-1/page?namespace=jira:issue", pathMigration + "/error/tr-1", pathMigration + "/data/tr-1/all"} {
		if code, body := call("GET", rel, ""); code != 200 {
			t.Errorf("GET %s = %d %s", rel, code, body)
		}
	}
	if code, _ := call("POST", pathMigration+"/feedback/tr-1", `{}`); code != 200 {
		t.Errorf("feedback = %d", code)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512", 512, true}, {"64KB", 64 << 10, true}, {"10MiB", 10 << 20, true}, {"1G", 1 << 30, true}, {"2gib", 2 << 30, true},
		{"0", 0, false}, {"-1MB", 0, false}, {"12XB", 0, false}, {"", 0, false}, {"2000GB", 0, false},
	} {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%t", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--big") {
			t.Errorf("ParseSize(%q) error %q does not name --big", c.in, err)
		}
	}
}

func TestPrinter_JSONLinesCarryTheTimelineChecksAndSummary(t *testing.T) {
	var out bytes.Buffer
	p := NewPrinter(&out, true)
	tl := &timeline{name: "install", start: time.Now(), p: p}
	p.start("install", "about")
	p.event(Event{Scenario: "install", Offset: 1500 * time.Millisecond, From: actorAtlassian, To: actorApp, What: "POST /installed", Status: 204})
	tl.expect("the worker read the license", false, "1 call", "0 calls")
	r := tl.result()
	p.result(r)
	p.Summary(Summary{Passed: 0, Failed: 1, Results: []Result{r}})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var types []string
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		types = append(types, m["type"].(string))
	}
	if strings.Join(types, ",") != "scenario,event,check,result,summary" {
		t.Errorf("line types = %v", types)
	}
	if !strings.Contains(lines[1], `"offsetMs":1500`) || !strings.Contains(lines[3], `"reason":"the worker read the license: expected 1 call, seen 0 calls"`) ||
		lines[4] != `{"failed":1,"passed":0,"type":"summary"}` {
		t.Errorf("lines:\n%s", out.String())
	}
}
