package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSLIResult_CountsOnly200And204AsGood(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{200, "good"}, {204, "good"}, {202, "bad"}, {201, "bad"}, {401, "bad"}, {503, "bad"}, {500, "bad"},
	}
	for _, tt := range tests {
		if got := SLIResult(tt.status); got != tt.want {
			t.Errorf("SLIResult(%d) = %s, want %s", tt.status, got, tt.want)
		}
	}
}

func TestHandler_ExposesWhatWasObserved(t *testing.T) {
	m := New()
	m.ObserveOutbound("GET", "/rest/atlassian-connect/1/addons/{appKey}", 0)
	m.ObserveOutbound("PUT", "/rest/atlassian-connect/1/migration/webhook", 200)
	m.ObserveTask("tenant:init", "failed", true, 20*time.Millisecond)
	m.InstallSLI.WithLabelValues(SLIResult(204)).Inc()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`connectrelay_outbound_calls_total{code="error",method="GET",route="/rest/atlassian-connect/1/addons/{appKey}"} 1`,
		`connectrelay_outbound_calls_total{code="200",method="PUT",route="/rest/atlassian-connect/1/migration/webhook"} 1`,
		`connectrelay_tasks_processed_total{outcome="failed",type="tenant:init"} 1`,
		`connectrelay_tasks_retried_total{type="tenant:init"} 1`,
		`connectrelay_install_callback_sli_total{result="good"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestMetrics_SLICountersExistFromStartUp(t *testing.T) {
	m := New()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range []string{
		`connectrelay_install_callback_sli_total{result="good"} 0`, `connectrelay_install_callback_sli_total{result="bad"} 0`,
		`connectrelay_webhook_sli_total{result="good"} 0`, `connectrelay_webhook_sli_total{result="bad"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), line) {
			t.Errorf("a fresh process does not expose %s", line)
		}
	}
}
