package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/atlassiantest"
	"github.com/connectrelay/connectrelay/tasks"
	"github.com/hibiken/asynq"
)

// resend builds a copy of req (same URL and Authorization) with body.
func resend(t *testing.T, req *http.Request, body any) *http.Request {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := http.NewRequest(req.Method, req.URL.String(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	cp.Header = req.Header.Clone()
	return cp
}

// A captured, still-valid install token sent again with another body (the
// attacker's secret, same iat) is refused and the tenant is untouched; the same
// token with the same body (Atlassian's retry) is still acknowledged.
func TestInstalled_CapturedTokenWithAnotherBodyIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	const attackerSecret = "attacker-secret-0123456789abcdef01234567"
	victimBody := atlassiantest.InstallBody("victim", site, secretA, appKey)
	req := h.atl.Request(t, h.baseURL, handlers.PathInstalled, victimBody, atlassiantest.Token{Issuer: "victim"})
	captured := resend(t, req, victimBody)
	if code, body := h.do(req); code != http.StatusNoContent {
		t.Fatalf("genuine installed = %d %s", code, body)
	}
	before := h.tenantRow("victim")

	tests := []struct {
		name string
		body map[string]any
		want int
	}{
		{"same token, the attacker's secret", atlassiantest.InstallBody("victim", site, attackerSecret, appKey), http.StatusUnauthorized},
		{"same token, another display URL", func() map[string]any {
			b := atlassiantest.InstallBody("victim", site, secretA, appKey)
			b["displayUrl"] = "https://phish.example.com"
			return b
		}(), http.StatusUnauthorized},
		{"same token, same body: Atlassian's retry", victimBody, http.StatusNoContent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := h.do(resend(t, captured, tc.body))
			if code != tc.want {
				t.Errorf("status = %d %s, want %d", code, body, tc.want)
			}
			if after := h.tenantRow("victim"); after != before {
				t.Errorf("victim's record changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	if got, _ := h.store.SharedSecret(context.Background(), "victim"); string(got) != secretA {
		t.Errorf("victim's secret = %q, want the victim's", got)
	}
	if code, _ := h.hs256(handlers.PathEnabled, "victim", secretA, lifecycleBody("victim", site, "enabled")); code != http.StatusNoContent {
		t.Errorf("the victim's secret no longer verifies: %d", code)
	}
	if code, _ := h.hs256(handlers.PathDisabled, "victim", attackerSecret, lifecycleBody("victim", site, "disabled")); code != http.StatusUnauthorized {
		t.Errorf("the attacker's secret verifies: %d", code)
	}
}

// An enabled replayed (same token, same body) after a later disabled of the same
// iat second is acknowledged but does not re-enable the tenant.
func TestEnabled_ReplayAfterADisabledOfTheSameSecondDoesNotReEnable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if code, _ := h.install("ck-1", site, secretA); code != http.StatusNoContent {
		t.Fatal("install failed")
	}
	iat := time.Now().Truncate(time.Second)
	tok := atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA), IssuedAt: iat}
	enabled := h.atl.Request(t, h.baseURL, handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"), tok)
	captured := resend(t, enabled, lifecycleBody("ck-1", site, "enabled"))
	if code, body := h.do(enabled); code != http.StatusNoContent {
		t.Fatalf("enabled = %d %s", code, body)
	}
	disabled := h.atl.Request(t, h.baseURL, handlers.PathDisabled, lifecycleBody("ck-1", site, "disabled"), tok)
	if code, body := h.do(disabled); code != http.StatusNoContent {
		t.Fatalf("disabled = %d %s", code, body)
	}
	if code, body := h.do(captured); code != http.StatusNoContent {
		t.Fatalf("replayed enabled = %d %s, want 204 (a copy is acknowledged)", code, body)
	}
	tn, err := h.store.Get(context.Background(), "ck-1")
	if err != nil || tn.Enabled {
		t.Errorf("after enabled, disabled, replayed enabled (one iat second): enabled=%v (%v), want false", tn.Enabled, err)
	}
	if code, _ := h.do(resend(t, captured, lifecycleBody("ck-1", "https://other.atlassian.net", "enabled"))); code != http.StatusUnauthorized {
		t.Errorf("enabled token with another body = %d, want 401", code)
	}
}

// A copy of a request that failed (503 before it was applied) is applied when
// it is retried: only a copy of a recorded delivery is not applied again.
func TestInstalled_RetryOfAFailedDeliveryIsApplied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{viaProxies: true})
	body := atlassiantest.InstallBody("ck-1", site, secretA, appKey)
	req := h.atl.Request(t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "ck-1"})
	retry := resend(t, req, body)
	h.pgProxy.Freeze()
	if code, _ := h.do(req); code != http.StatusServiceUnavailable {
		t.Fatalf("installed with Postgres hung = %d, want 503", code)
	}
	h.pgProxy.Thaw()
	if code, b := h.do(retry); code != http.StatusNoContent {
		t.Fatalf("retry = %d %s, want 204", code, b)
	}
	if got, err := h.store.SharedSecret(context.Background(), "ck-1"); err != nil || string(got) != secretA {
		t.Errorf("secret after the retry = %q, %v", got, err)
	}
}

// A callback answered 503 after its commit (its follow-up task could not be
// queued) is completed by Atlassian's retry, a copy of it: the copy changes
// nothing and queues the task the first could not.
func TestLifecycle_CopyOfACallbackAnswered503AfterItsCommitQueuesItsTask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		installed bool // the tenant exists before the callback
		path      string
		body      any
		token     atlassiantest.Token
		task      string
	}{
		{"enabled", true, handlers.PathEnabled, lifecycleBody("ck-1", site, "enabled"),
			atlassiantest.Token{Alg: "HS256", Issuer: "ck-1", Secret: []byte(secretA)}, tasks.TypeTenantEnabled},
		{"installed", false, handlers.PathInstalled, atlassiantest.InstallBody("ck-1", site, secretA, appKey),
			atlassiantest.Token{Issuer: "ck-1"}, tasks.TypeTenantInit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var fail atomic.Int32
			h := newHarness(t, harnessOpts{failLifecycleEnqueues: &fail})
			if tc.installed {
				if code, _ := h.install("ck-1", site, secretA); code != http.StatusNoContent {
					t.Fatal("install failed")
				}
				h.dropPending(tasks.QueueLifecycle)
			}
			req := h.atl.Request(t, h.baseURL, tc.path, tc.body, tc.token)
			retry := resend(t, req, tc.body)
			fail.Store(1)
			if code, body := h.do(req); code != http.StatusServiceUnavailable {
				t.Fatalf("%s with the enqueue failing = %d %s, want 503", tc.name, code, body)
			}
			events := h.historyCount("ck-1")
			if code, body := h.do(retry); code != http.StatusNoContent {
				t.Fatalf("retry = %d %s, want 204", code, body)
			}
			if n := countType(h.tasksIn(tasks.QueueLifecycle), tc.task); n != 1 {
				t.Errorf("%s tasks after the retry = %d, want 1", tc.task, n)
			}
			if got := h.historyCount("ck-1"); got != events {
				t.Errorf("history rows after the copy = %d, want %d (a copy is recorded once)", got, events)
			}
			tn, err := h.store.Get(context.Background(), "ck-1")
			if err != nil || !tn.Installed || tn.Enabled != tc.installed {
				t.Errorf("tenant after %s = %+v, %v", tc.name, tn, err)
			}
		})
	}
}

// A genuine delivery that failed before its change (Postgres hung) leaves its
// token bound to its body: the same token with another body is refused, and
// Atlassian's retry of the genuine body is applied.
func TestInstalled_CapturedTokenIsRefusedWithAnotherBodyAfterTheGenuineDeliveryFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{viaProxies: true})
	const attackerSecret = "attacker-secret-0123456789abcdef01234567"
	body := atlassiantest.InstallBody("victim", site, secretA, appKey)
	req := h.atl.Request(t, h.baseURL, handlers.PathInstalled, body, atlassiantest.Token{Issuer: "victim"})
	replayed := resend(t, req, atlassiantest.InstallBody("victim", site, attackerSecret, appKey))
	retry := resend(t, req, body)
	h.pgProxy.Freeze()
	code, _ := h.do(req)
	h.pgProxy.Thaw()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("installed with Postgres hung = %d, want 503", code)
	}
	if code, b := h.do(replayed); code != http.StatusUnauthorized {
		t.Errorf("the token with the attacker's body = %d %s, want 401", code, b)
	}
	if code, b := h.do(retry); code != http.StatusNoContent {
		t.Fatalf("Atlassian's retry = %d %s, want 204", code, b)
	}
	if got, err := h.store.SharedSecret(context.Background(), "victim"); err != nil || string(got) != secretA {
		t.Errorf("secret = %q, %v; want the genuine one", got, err)
	}
}

// With Redis unreachable the token cannot be bound: 503, nothing changed.
func TestEnabled_ReplayCacheDownAnswers503(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{viaProxies: true})
	if code, _ := h.install("ck-1", site, secretA); code != http.StatusNoContent {
		t.Fatal("install failed")
	}
	before := h.tenantRow("ck-1")
	h.redisProxy.Freeze()
	defer h.redisProxy.Thaw()
	if code, body := h.hs256(handlers.PathEnabled, "ck-1", secretA, lifecycleBody("ck-1", site, "enabled")); code != http.StatusServiceUnavailable {
		t.Errorf("enabled with Redis hung = %d %s, want 503", code, body)
	}
	if after := h.tenantRow("ck-1"); after != before {
		t.Errorf("tenant changed while its token could not be bound")
	}
}

func countType(list []*asynq.TaskInfo, typ string) int {
	n := 0
	for _, ti := range list {
		if ti.Type == typ {
			n++
		}
	}
	return n
}
