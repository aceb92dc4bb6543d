package metrics

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// registered returns the names of every metric of Metrics.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	m := New()
	names := map[string]bool{}
	v := reflect.ValueOf(m).Elem()
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for i := range v.NumField() {
		if !v.Field(i).CanInterface() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc, 10)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if mm := fq.FindStringSubmatch(d.String()); mm != nil {
				names[mm[1]] = true
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metrics: %v", len(names), names)
	}
	return names
}

// The alert rules and the dashboard name only metrics the code exports.
func TestDeploy_AlertsAndDashboardNameExportedMetrics(t *testing.T) {
	names := registered(t)
	metric := regexp.MustCompile(`connectrelay_[a-z_]+`)
	alerts, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile("../../deploy/grafana/connectrelay.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("dashboard JSON: %v (%d panels)", err, len(d.Panels))
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for file, text := range map[string]string{"alerts.yml": string(alerts), "connectrelay.json": strings.Join(exprs, "\n")} {
		found := metric.FindAllString(text, -1)
		if len(found) == 0 {
			t.Errorf("%s names no metric", file)
		}
		for _, n := range found {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
			if !names[n] && !names[base] {
				t.Errorf("%s names %s, which the code does not export", file, n)
			}
		}
	}
	for _, alert := range []string{"ConnectRelayInstallCallbackSLI", "ConnectRelayBacklogAge", "ConnectRelayArchivedTasksGrowing", "ConnectRelayNoLiveWorker"} {
		if !strings.Contains(string(alerts), "alert: "+alert) {
			t.Errorf("alerts.yml has no %s", alert)
		}
	}
}
