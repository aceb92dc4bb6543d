// Package metrics holds the Prometheus collectors both binaries export at
// /metrics. One Metrics value is built per process and passed to constructors (no
// global registry), so tests can read exactly what their own code counted.
//
// The install-callback SLI is counted the way Atlassian's Cloud Fortified program
// defines it: an answer of 200 or 204 is good, anything else (including 202,
// 401, 503 and timeouts) is bad. Alert when good/(good+bad) drops below 99.9 %
// over 24 h; the program's bar is 99 % over 28 days.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors of one process.
type Metrics struct {
	registry *prometheus.Registry

	// LifecycleCallbacks counts lifecycle callbacks by event (installed, uninstalled,
	// enabled, disabled) and outcome (ok, bad_request, unauthorized, unavailable, ...).
	LifecycleCallbacks *prometheus.CounterVec
	// InstallSLI counts install callbacks by Atlassian's definition: result="good"
	// for 200/204, result="bad" for anything else.
	InstallSLI *prometheus.CounterVec
	// WebhookSLI counts migration webhook answers the same way.
	WebhookSLI *prometheus.CounterVec
	// HTTPDuration is request latency per route and status class.
	HTTPDuration *prometheus.HistogramVec
	// TasksProcessed counts worker task outcomes by type and outcome
	// (succeeded, failed, skipped).
	TasksProcessed *prometheus.CounterVec
	// TasksRetried counts task attempts that were retries, by type.
	TasksRetried *prometheus.CounterVec
	// TaskDuration is task handler latency by type.
	TaskDuration *prometheus.HistogramVec
	// OutboundCalls counts app->product calls by method, route template and status
	// ("error" when no HTTP answer came back).
	OutboundCalls *prometheus.CounterVec
	// MigrationEvents counts received migration events by type and outcome
	// (enqueued, duplicate, rejected).
	MigrationEvents *prometheus.CounterVec
	// QueueTasks is the number of tasks per queue and state (pending, active,
	// scheduled, retry, archived), collected by one worker at a time.
	QueueTasks *prometheus.GaugeVec
	// QueueOldestPending is the age in seconds of the oldest pending task per
	// queue (0 when none is pending).
	QueueOldestPending *prometheus.GaugeVec
	// WorkersLive is the number of worker processes whose heartbeat is current.
	WorkersLive prometheus.Gauge
	// QueueStatsCollected is when the queue gauges were last collected (Unix
	// seconds), so a stale collector is visible.
	QueueStatsCollected prometheus.Gauge
	// StaleTenants is the missed-uninstall count: installed tenants that sent
	// no installed since STALE_SINCE (label since), set by the worker's stale
	// sweep once STALE_SINCE is more than 24 h ago; no series before that.
	StaleTenants *prometheus.GaugeVec
}

// New builds the collectors and registers them, with the Go runtime and process
// collectors, on a registry of their own.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		registry: r,
		LifecycleCallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_lifecycle_callbacks_total",
			Help: "Lifecycle callbacks received, by event and outcome.",
		}, []string{"event", "outcome"}),
		InstallSLI: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_install_callback_sli_total",
			Help: "Install callbacks by Atlassian's SLI: good = answered 200 or 204, bad = anything else.",
		}, []string{"result"}),
		WebhookSLI: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_webhook_sli_total",
			Help: "Migration webhook deliveries by Atlassian's SLI: good = answered 200 or 204, bad = anything else.",
		}, []string{"result"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "connectrelay_http_request_duration_seconds",
			Help:    "Receiver request latency by route, method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "code"}),
		TasksProcessed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_tasks_processed_total",
			Help: "Worker task attempts by type and outcome.",
		}, []string{"type", "outcome"}),
		TasksRetried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_tasks_retried_total",
			Help: "Worker task attempts that were retries, by type.",
		}, []string{"type"}),
		TaskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "connectrelay_task_duration_seconds",
			Help:    "Worker task handler latency by type.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}, []string{"type"}),
		OutboundCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_outbound_calls_total",
			Help: "App to product REST calls by method, route template and status code.",
		}, []string{"method", "route", "code"}),
		MigrationEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connectrelay_migration_events_total",
			Help: "Migration webhook events by event type and outcome.",
		}, []string{"event_type", "outcome"}),
		QueueTasks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connectrelay_queue_tasks",
			Help: "Tasks per queue and state, collected by one worker at a time (take max() across workers).",
		}, []string{"queue", "state"}),
		QueueOldestPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connectrelay_queue_oldest_pending_seconds",
			Help: "Age of the oldest pending task per queue, 0 when none is pending.",
		}, []string{"queue"}),
		WorkersLive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connectrelay_workers_live",
			Help: "Worker processes whose heartbeat is current.",
		}),
		QueueStatsCollected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connectrelay_queue_stats_collected_timestamp_seconds",
			Help: "When this worker last collected the queue gauges (0: it is not the collector).",
		}),
		StaleTenants: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connectrelay_stale_tenants",
			Help: "Installed tenants that sent no installed since STALE_SINCE (probably uninstalled without the hook), by STALE_SINCE.",
		}, []string{"since"}),
	}
	// The SLI series exist from start-up at 0, so a rate over a fresh process
	// is 0, not absent.
	for _, res := range []string{"good", "bad"} {
		m.InstallSLI.WithLabelValues(res)
		m.WebhookSLI.WithLabelValues(res)
	}
	r.MustRegister(
		m.QueueTasks, m.QueueOldestPending, m.WorkersLive, m.QueueStatsCollected,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.LifecycleCallbacks, m.InstallSLI, m.WebhookSLI, m.HTTPDuration,
		m.TasksProcessed, m.TasksRetried, m.TaskDuration, m.OutboundCalls, m.MigrationEvents,
		m.StaleTenants,
	)
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Registry exposes the registry for tests and for vendors adding their own
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// SLIResult maps an HTTP status to Atlassian's good/bad classification: only 200
// and 204 are good (a 202 is bad for Cloud Fortified).
func SLIResult(status int) string {
	if status == http.StatusOK || status == http.StatusNoContent {
		return "good"
	}
	return "bad"
}

// ObserveOutbound records one app->product call; status 0 means no HTTP answer.
func (m *Metrics) ObserveOutbound(method, route string, status int) {
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.OutboundCalls.WithLabelValues(method, route, code).Inc()
}

// ObserveTask records one task attempt.
func (m *Metrics) ObserveTask(taskType, outcome string, retry bool, d time.Duration) {
	m.TasksProcessed.WithLabelValues(taskType, outcome).Inc()
	if retry {
		m.TasksRetried.WithLabelValues(taskType).Inc()
	}
	m.TaskDuration.WithLabelValues(taskType).Observe(d.Seconds())
}
