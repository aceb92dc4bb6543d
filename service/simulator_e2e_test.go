package service_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/forge"
	"github.com/connectrelay/connectrelay/internal/simulator"
	"github.com/connectrelay/connectrelay/service"
)

const simInternalToken = "internal-token-simulator-e2e-0123456789abcdef"

// syncBuffer is a bytes.Buffer safe for the simulator's concurrent prints.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// simE2E is a real receiver and the simulator that plays Atlassian for it;
// the caller starts the worker it wants.
func simE2E(t *testing.T, timeout time.Duration, edits ...func(*config.Config)) (*e2e, *simulator.Simulator) {
	t.Helper()
	var sim *simulator.Simulator
	e := newE2EWith(t, "", func(c *config.Config) {
		c.InternalToken = simInternalToken
		sim = startSimulator(t, simulator.Config{App: c.BaseURL, Internal: c.InternalURL, InternalToken: simInternalToken, Timeout: timeout})
		applySimEnv(t, c, sim.Env())
		for _, edit := range edits {
			edit(c)
		}
	})
	return e, sim
}

// applySimEnv configures c as the printed environment of the simulator
// (connectctl simulate --print-env) configures the service: through
// config.Load, so that what is printed is what the service reads.
func applySimEnv(t *testing.T, c *config.Config, lines []string) {
	t.Helper()
	env := map[string]string{"DEV_MODE": "true", "CONNECT_APP_KEY": c.AppKey, "CONNECT_BASE_URL": c.BaseURL}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("simulator env line %q is not NAME=value", l)
		}
		env[k] = v
	}
	loaded, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the simulator's environment does not load: %v", err)
	}
	c.KeysCDNURL, c.ProductHosts = loaded.KeysCDNURL, loaded.ProductHosts
	c.ForgeAppID, c.ForgeJWKSURL, c.ForgeAPIHosts, c.ForgeEnvironments = loaded.ForgeAppID, loaded.ForgeJWKSURL, loaded.ForgeAPIHosts, loaded.ForgeEnvironments
	if c.ForgeAppID == "" || !c.ForgeInsecure() {
		t.Fatalf("the simulator's environment does not enable Forge on loopback: %+v", lines)
	}
}

// startSimulator runs a simulator on a loopback port until the test ends.
func startSimulator(t *testing.T, cfg simulator.Config) *simulator.Simulator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := simulator.New(cfg, ln)
	if err != nil {
		t.Fatalf("simulator.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sim.Close(ctx)
	})
	return sim
}

// play runs the scenarios and returns the results and the printed timeline.
func play(t *testing.T, sim *simulator.Simulator, opts simulator.Options, names ...string) (simulator.Summary, string) {
	t.Helper()
	var out syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := simulator.NewPrinter(&out, false)
	sum, err := sim.Run(ctx, names, opts, p)
	if err != nil {
		t.Fatalf("Run %v: %v\n%s", names, err, out.String())
	}
	p.Summary(sum)
	return sum, out.String()
}

func TestSimulator_EveryScenarioPassesAgainstARealReceiverAndWorker(t *testing.T) {
	t.Parallel()
	e, sim := simE2E(t, 10*time.Second)
	e.startWorker(service.WorkerOptions{})
	runs := []struct {
		name  string
		opts  simulator.Options
		names []string
	}{
		{"lifecycle", simulator.Options{}, []string{"install", "reinstall", "rotate-secret", "rename-site", "import-site",
			"upgrade", "uninstall-race", "license-lapse", "forged-install"}},
		{"migration", simulator.Options{}, []string{"migration"}},
		{"migration out of order with duplicates", simulator.Options{Uploads: 4, OutOfOrder: true, Duplicates: true}, []string{"migration"}},
		{"migration without messageId", simulator.Options{NoMessageID: true, Duplicates: true}, []string{"migration"}},
		{"migration cancelled", simulator.Options{Cancel: true}, []string{"migration"}},
		{"migration listener errored", simulator.Options{ListenerErrored: true}, []string{"migration"}},
		{"migration big upload", simulator.Options{Uploads: 1, Big: 48 << 20}, []string{"migration"}},
		{"storm", simulator.Options{Tenants: 12}, []string{"storm"}},
		{"forge", simulator.Options{}, []string{"forge-install", "forge-upgrade", "forge-pre-uninstall", "connect-on-forge"}},
		{"forge migration", simulator.Options{}, []string{"forge-migration"}},
		{"forge migration out of order with duplicates", simulator.Options{Uploads: 4, OutOfOrder: true, Duplicates: true}, []string{"forge-migration"}},
		{"forge migration without messageId", simulator.Options{NoMessageID: true, Duplicates: true}, []string{"forge-migration"}},
		{"forge migration cancelled", simulator.Options{Cancel: true, Duplicates: true}, []string{"forge-migration"}},
		{"forge migration listener errored", simulator.Options{ListenerErrored: true}, []string{"forge-migration"}},
		{"forge migration big upload", simulator.Options{Uploads: 1, Big: 16 << 20}, []string{"forge-migration"}},
		{"tour", simulator.Options{}, []string{"tour"}},
	}
	seen := map[string]bool{}
	for _, r := range runs {
		sum, out := play(t, sim, r.opts, r.names...)
		for _, res := range sum.Results {
			seen[res.Scenario] = true
		}
		if sum.Failed != 0 || sum.Passed != len(sum.Results) || len(sum.Results) == 0 {
			t.Errorf("%s: %d passed, %d failed:\n%s", r.name, sum.Passed, sum.Failed, out)
		}
		if !strings.HasSuffix(out, "passed, 0 failed\n") {
			t.Errorf("%s: the last line is not the summary:\n%s", r.name, out)
		}
	}
	for _, name := range simulator.Scenarios() {
		if !seen[name] {
			t.Errorf("scenario %s never ran", name)
		}
	}
}

// refusingTransport answers some of the worker's product calls itself,
// playing a worker that never makes them.
type refusingTransport struct {
	refuse func(*http.Request) bool
	tamper func(*http.Request)
}

func (rt refusingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if rt.refuse != nil && rt.refuse(r) {
		return &http.Response{StatusCode: http.StatusForbidden, Header: http.Header{"Content-Type": {"application/json"}},
			Body: http.NoBody, Request: r}, nil
	}
	if rt.tamper != nil {
		rt.tamper(r)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestSimulator_BrokenServicesFailTheMatchingScenario(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		worker   *service.WorkerOptions // nil: no worker runs
		edit     func(*config.Config)   // of the service's configuration
		scenario string
		reason   string
	}{
		{"a worker that registers no migration webhook", &service.WorkerOptions{Test: service.WorkerTest{HTTPClient: &http.Client{
			Timeout: 5 * time.Second,
			Transport: refusingTransport{refuse: func(r *http.Request) bool {
				return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/migration/webhook")
			}},
		}}}, nil, "install", "the worker registered the migration webhook: expected PUT /rest/atlassian-connect/1/migration/webhook"},
		{"a worker whose requests change after signing", &service.WorkerOptions{Test: service.WorkerTest{HTTPClient: &http.Client{
			Timeout: 5 * time.Second,
			Transport: refusingTransport{tamper: func(r *http.Request) {
				q := r.URL.Query()
				q.Set("expand", "everything")
				r.URL.RawQuery = q.Encode()
			}},
		}}}, nil, "install", "qsh"},
		{"no worker", nil, nil, "install", "the worker read the license: expected 1 call of GET /rest/atlassian-connect/1/addons/"},
		{"no worker for a Forge install", nil, nil, "forge-install",
			"the worker asked serverInfo with the installation's system token: expected GET http://"},
		{"a service without FORGE_APP_ID", &service.WorkerOptions{}, func(c *config.Config) { c.ForgeAppID = "" },
			"forge-install", "installed answered: expected 204, seen 404"},
		{"a worker that never sets a Forge message status", &service.WorkerOptions{Test: service.WorkerTest{HTTPClient: &http.Client{
			Timeout: 5 * time.Second,
			// An *http.Transport, which the download client can guard: its
			// Proxy hook fails the status calls, and the guard clears it for
			// the downloads.
			Transport: &http.Transport{Proxy: func(r *http.Request) (*url.URL, error) {
				if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/app/migration/forge/v1/message/") {
					return nil, errors.New("the status call is refused by the test")
				}
				return nil, nil
			}},
		}}}, nil, "forge-migration", "got exactly one status: expected one POST /app/migration/forge/v1/message/"},
		{"a service trusting another Forge app", &service.WorkerOptions{}, func(c *config.Config) {
			c.ForgeAppID = forge.AppARIPrefix + "0badf00d-0000-4000-8000-000000000000"
		}, "connect-on-forge", "the Forge upgraded answered: expected 204, seen 401"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var edits []func(*config.Config)
			if c.edit != nil {
				edits = append(edits, c.edit)
			}
			e, sim := simE2E(t, 2*time.Second, edits...)
			if c.worker != nil {
				e.startWorker(*c.worker)
			}
			sum, out := play(t, sim, simulator.Options{}, c.scenario)
			if sum.Failed != 1 || len(sum.Results) != 1 {
				t.Fatalf("%d passed, %d failed, want the scenario to fail:\n%s", sum.Passed, sum.Failed, out)
			}
			if r := sum.Results[0]; !strings.Contains(r.Reason, c.reason) {
				t.Errorf("reason = %q, want it to contain %q\n%s", r.Reason, c.reason, out)
			}
			if !strings.Contains(out, "FAIL "+c.scenario) || !strings.HasSuffix(out, "0 passed, 1 failed\n") {
				t.Errorf("output lacks the FAIL line or the summary:\n%s", out)
			}
		})
	}
}

// The simulator's Fleet, which the scale run drives, against two real
// receivers and a worker: a tenant installed, an upload acknowledged before
// its listener-triggered and re-sent to the other replica, the transfer
// settled once, and the product's view (downloads, settles, digests) read back.
func TestSimulator_FleetPlaysAMigrationAcrossTwoReceivers(t *testing.T) {
	t.Parallel()
	e, sim := simE2E(t, 10*time.Second)
	e.startWorker(service.WorkerOptions{})
	replicas := []string{e.cfg.BaseURL, e.startReceiver("receiver-b")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fleet, err := sim.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tn := fleet.NewTenant("fleet")
	if a := fleet.Install(ctx, replicas[1], tn); a.Err != nil || a.Status != http.StatusNoContent {
		t.Fatalf("install = %+v, want 204", a)
	}
	eventually(t, 10*time.Second, "tenant initialized at the product", func() bool { return fleet.Initialized(tn) })
	const tr = "tr-fleet"
	sizes := map[string]int64{}
	part := fleet.AddUpload(tn, tr, "part-1", 3000)
	final := fleet.AddUpload(tn, tr, "final", 70<<10)
	sizes[part], sizes[final] = 3000, 70<<10
	for i, ev := range []simulator.MigrationEvent{
		{Type: simulator.EventUploaded, TransferID: tr, S3Key: part, Label: "part-1", MessageID: "m-1"},
		{Type: simulator.EventUploaded, TransferID: tr, S3Key: part, Label: "part-1", MessageID: "m-1"},
		{Type: simulator.EventListenerTriggered, TransferID: tr, MessageID: "m-lt"},
		{Type: simulator.EventUploaded, TransferID: tr, S3Key: final, Label: "final", MessageID: "m-2"},
	} {
		if a := fleet.SendMigrationEvent(ctx, replicas[i%2], tn, ev); a.Err != nil || a.Status != http.StatusOK {
			t.Fatalf("event %d (%s) = %+v, want 200", i, ev.Type, a)
		}
	}
	eventually(t, 15*time.Second, "transfer settled at the product", func() bool { return len(tn.Settles(tr)) > 0 })
	time.Sleep(300 * time.Millisecond)
	if got := tn.Settles(tr); len(got) != 1 || got[0] != "SUCCESS" {
		t.Errorf("settles = %v, want [SUCCESS]", got)
	}
	for key, size := range sizes {
		if all, complete := tn.Downloads(key); all != 1 || complete != 1 {
			t.Errorf("%s: %d downloads, %d complete; want 1, 1", key, all, complete)
		}
		var sum string
		if err := e.pool.QueryRow(ctx, `SELECT sha256 FROM migration_imported_data WHERE transfer_id = $1 AND s3_key = $2`, tr, key).Scan(&sum); err != nil {
			t.Fatalf("%s not imported: %v", key, err)
		}
		if want := simulator.UploadDigest(key, size); sum != want {
			t.Errorf("%s: imported sha256 %s, the product served %s", key, sum, want)
		}
	}
	if n := tn.Refused(); n != 0 {
		t.Errorf("%d worker calls refused by the product", n)
	}
	if all, complete := tn.Downloads("sim/none"); all != 0 || complete != 0 {
		t.Errorf("an unknown upload has downloads %d/%d", all, complete)
	}
}
