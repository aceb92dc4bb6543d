package service_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/simulator"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/tasks"
)

// The scale run (issue 14, item 7) is too heavy for every test run: it is
// gated by CONNECTRELAY_SCALE=1 and sized by these variables.
const (
	scaleEnv         = "CONNECTRELAY_SCALE"
	scaleEventsEnv   = "CONNECTRELAY_SCALE_EVENTS"   // migration events sent, duplicates included (10000)
	scaleInstallsEnv = "CONNECTRELAY_SCALE_INSTALLS" // tenants of the install storm (2000)
	scaleDeadlineEnv = "CONNECTRELAY_SCALE_DEADLINE" // the whole run, set-up to verdict (8m)
	scaleLogsEnv     = "CONNECTRELAY_SCALE_LOGS"     // where the processes' logs go (a temporary directory)
)

// scaleUploadsPerTransfer is how many uploads each transfer has: with its
// listener-triggered, 35 distinct events, so 10,000 events with 30 %
// duplicates are 200 transfers.
const scaleUploadsPerTransfer = 34

// scaleEarlyUploads is how many uploads of each transfer are sent (and
// acknowledged) before its listener-triggered.
const scaleEarlyUploads = 2

// scaleWorkerConcurrency is WORKER_CONCURRENCY of each worker: also the most
// downloads the SIGKILLed worker can have had in flight.
const scaleWorkerConcurrency = 10

// Senders of each kind of traffic, as Atlassian's many nodes would send.
const (
	scaleMigrationSenders = 16
	scaleInstallSenders   = 8
	// scaleAttempts bounds the deliveries of one request (the first and its
	// retries, on alternating receivers, as a load balancer would).
	scaleAttempts = 20
)

type scaleParams struct {
	events, duplicates, distinct, transfers, installs int
	deadline                                          time.Duration
}

func scaleParamsFromEnv(t *testing.T) scaleParams {
	t.Helper()
	num := func(name string, def int) int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive integer", name, v)
		}
		return n
	}
	p := scaleParams{installs: num(scaleInstallsEnv, 2000), deadline: 8 * time.Minute}
	if v := os.Getenv(scaleDeadlineEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a duration such as 8m", scaleDeadlineEnv, v)
		}
		p.deadline = d
	}
	events := num(scaleEventsEnv, 10000)
	perTransfer := scaleUploadsPerTransfer + 1
	p.transfers = max(1, int(math.Round(float64(events)*0.7/float64(perTransfer))))
	p.distinct = p.transfers * perTransfer
	p.duplicates = int(math.Round(float64(p.distinct) * 3 / 7))
	p.events = p.distinct + p.duplicates
	return p
}

// scaleSend is one planned delivery of a migration event: an original, or a
// re-delivery (same messageId) of one.
type scaleSend struct {
	tenant *simulator.Tenant
	ev     simulator.MigrationEvent
	// orig is the original of a duplicate; a duplicate is sent only after
	// its original was acknowledged, as a re-delivery is.
	orig *scaleSend
	// after must be acknowledged before this is sent: a listener-triggered
	// waits for its transfer's early uploads.
	after []*scaleSend
	done  chan struct{}
	ok    bool
	// sentAt is when the first attempt started, ackAt when the 2xx came.
	sentAt, ackAt time.Time
}

// scaleCounts are the answers of one kind of traffic in one phase.
type scaleCounts struct{ ok, c4xx, c5xx, conn int }

// scalePhases name the phases of the run, by when an attempt started.
var scalePhases = []string{"before the restart", "during the restart", "after the restart"}

// scaleLoad is the load generator: it sends, retries on the other
// receiver, and classifies every attempt by phase and by whether it met the
// restart window of the restarted receiver.
type scaleLoad struct {
	receivers []string

	mu          sync.Mutex
	restartFrom time.Time
	restartTo   time.Time
	restarting  string
	counts      map[string]*[3]scaleCounts // kind -> phase
	// inWindow are failed attempts (5xx, no answer) that met the restart
	// window at the restarted receiver: allowed. outside are the others.
	inWindow, outside int
	outsideSeen       []string
	c4xxSeen          []string
}

func (g *scaleLoad) phase(at time.Time) int {
	switch {
	case g.restartFrom.IsZero() || at.Before(g.restartFrom):
		return 0
	case g.restartTo.IsZero() || at.Before(g.restartTo):
		return 1
	default:
		return 2
	}
}

// record classifies one attempt.
func (g *scaleLoad) record(kind, app string, start, end time.Time, a simulator.Answer, want int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.counts[kind]
	if c == nil {
		c = &[3]scaleCounts{}
		g.counts[kind] = c
	}
	pc := &c[g.phase(start)]
	switch {
	case a.Err == nil && a.Status == want:
		pc.ok++
		return
	case a.Err == nil && a.Status < 500:
		pc.c4xx++
		if len(g.c4xxSeen) < 5 {
			g.c4xxSeen = append(g.c4xxSeen, fmt.Sprintf("%s to %s: %d", kind, app, a.Status))
		}
		return
	case a.Err != nil:
		pc.conn++
	default:
		pc.c5xx++
	}
	during := app == g.restarting && !g.restartFrom.IsZero() && !end.Before(g.restartFrom) &&
		(g.restartTo.IsZero() || !start.After(g.restartTo))
	if during {
		g.inWindow++
		return
	}
	g.outside++
	if len(g.outsideSeen) < 5 {
		what := fmt.Sprintf("%d", a.Status)
		if a.Err != nil {
			what = a.Err.Error()
		}
		g.outsideSeen = append(g.outsideSeen, fmt.Sprintf("%s to %s at +%s: %s", kind, app, start.Format("15:04:05.000"), what))
	}
}

// deliver sends until the app answers want, a 4xx (not retried) or
// scaleAttempts attempts failed; first picks the receiver of the first
// attempt. It returns when the answer came and whether it was want.
func (g *scaleLoad) deliver(ctx context.Context, kind string, first, want int, send func(ctx context.Context, app string) simulator.Answer) (time.Time, bool) {
	for attempt := range scaleAttempts {
		if ctx.Err() != nil {
			return time.Time{}, false
		}
		app := g.receivers[(first+attempt)%len(g.receivers)]
		start := time.Now()
		a := send(ctx, app)
		end := time.Now()
		if ctx.Err() != nil {
			return time.Time{}, false // the run's deadline, not the app's answer
		}
		g.record(kind, app, start, end, a, want)
		if a.Err == nil && a.Status == want {
			return end, true
		}
		if a.Err == nil && a.Status < 500 {
			return time.Time{}, false
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(50*time.Millisecond<<attempt, time.Second)):
		}
	}
	return time.Time{}, false
}

// scaleProc is one receiver or worker child process and how to start it again.
type scaleProc struct {
	name  string
	env   []string
	ready string // URL answering 200 once it serves
	*testenv.Process
}

// TestScale_TwoReceiversThreeWorkersThroughAKillAndARestart is the scale run:
// two receivers and three workers, built binaries run as child processes on
// one Redis DB and one Postgres database; a migration of 10,000 events (30 %
// of them re-deliveries of an earlier messageId, uploads acknowledged before
// their transfer's listener-triggered) and a 2,000-tenant install storm at
// the same time; one worker SIGKILLed and one receiver SIGTERMed and started
// again mid-run. Afterwards every upload is imported exactly once with the
// bytes the product served, every transfer settled SUCCESS once at the
// product, every tenant stored and initialized, no task active, retrying or
// archived, and no 5xx or unanswered request outside the restart window.
func TestScale_TwoReceiversThreeWorkersThroughAKillAndARestart(t *testing.T) {
	if os.Getenv(scaleEnv) != "1" {
		t.Skipf("the scale run is heavy (5 processes, 12,000 requests, minutes): run scripts/scale, or %s=1 go test -run TestScale -timeout 20m -v ./service/ (sized by %s, %s, %s)",
			scaleEnv, scaleEventsEnv, scaleInstallsEnv, scaleDeadlineEnv)
	}
	p := scaleParamsFromEnv(t)
	wallStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), p.deadline)
	defer cancel()
	out := func(format string, args ...any) { fmt.Printf("scale: "+format+"\n", args...) }
	out("%d migration events (%d distinct, %d duplicates) over %d transfers, %d-tenant install storm, deadline %s",
		p.events, p.distinct, p.duplicates, p.transfers, p.installs, p.deadline)

	bins := testenv.Binaries(t, "receiver", "worker")
	logDir := os.Getenv(scaleLogsEnv)
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	redisURL, dbURL := testenv.RedisURL(t), testenv.PostgresURL(t)

	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	recvPorts := []int{testenv.FreePort(t), testenv.FreePort(t)}
	baseURL := fmt.Sprintf("http://127.0.0.1:%d", recvPorts[0])
	sim := startSimulator(t, simulator.Config{App: baseURL, HTTPClient: client})

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	common := []string{
		"REDIS_URL=" + redisURL, "DATABASE_URL=" + dbURL,
		"CONNECT_APP_KEY=" + appKey, "CONNECT_BASE_URL=" + baseURL,
		"CONNECT_KEYS_CDN_URL=" + sim.Origin() + "/keys", "CONNECT_PRODUCT_HOSTS=127.0.0.1",
		"CONNECT_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"INTERNAL_LISTEN_ADDR=off", "LOG_LEVEL=info", "SHUTDOWN_TIMEOUT=10s",
		"WORKER_CONCURRENCY=" + strconv.Itoa(scaleWorkerConcurrency),
	}
	var (
		procsMu sync.Mutex
		procs   []*scaleProc
	)
	// start runs a child process, its output in logDir; it may be called
	// from any goroutine of the test.
	start := func(name, bin string, env []string, ready string) (*scaleProc, error) {
		f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log file of %s: %w", name, err)
		}
		t.Cleanup(func() { _ = f.Close() })
		proc, err := testenv.StartProcess(t, name, bin, env, f)
		if err != nil {
			return nil, err
		}
		sp := &scaleProc{name: name, env: env, ready: ready, Process: proc}
		procsMu.Lock()
		procs = append(procs, sp)
		procsMu.Unlock()
		return sp, nil
	}
	mustStart := func(name, bin string, env []string, ready string) *scaleProc {
		t.Helper()
		sp, err := start(name, bin, env, ready)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	waitReady := func(sp *scaleProc, within time.Duration) bool {
		return poll(within, 20*time.Millisecond, func() bool {
			if done, _ := sp.Exited(); done {
				return false
			}
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			defer rcancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, sp.ready, nil)
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	var receivers []string
	var recvProcs []*scaleProc
	for i, port := range recvPorts {
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		receivers = append(receivers, u)
		env := append(slices.Clone(common), fmt.Sprintf("LISTEN_ADDR=127.0.0.1:%d", port))
		recvProcs = append(recvProcs, mustStart(fmt.Sprintf("receiver-%d", i+1), bins["receiver"], env, u+"/readyz"))
	}
	var workers []*scaleProc
	for i := range 3 {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		env := append(slices.Clone(common), "WORKER_METRICS_ADDR="+addr)
		workers = append(workers, mustStart(fmt.Sprintf("worker-%d", i+1), bins["worker"], env, "http://"+addr+"/healthz"))
	}
	defer func() {
		if t.Failed() {
			for _, sp := range procs {
				t.Logf("last lines of %s (%s):\n%s", sp.name, filepath.Join(logDir, sp.name+".log"), tailFile(filepath.Join(logDir, sp.name+".log"), 15))
			}
		}
	}()
	for _, sp := range procs {
		if !waitReady(sp, 60*time.Second) {
			t.Fatalf("%s not ready within 60 s", sp.name)
		}
	}

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	rdb, err := tasks.OpenRedis(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	inspector := asynq.NewInspectorFromRedisClient(rdb)

	fleet, err := sim.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g := &scaleLoad{receivers: receivers, counts: map[string]*[3]scaleCounts{}}

	// The migrating tenants are installed and initialized first: the
	// platform sends a transfer's events to the webhook the app registered.
	migTenants := make([]*simulator.Tenant, p.transfers)
	for i := range migTenants {
		migTenants[i] = fleet.NewTenant("mig")
	}
	if failed := runBounded(ctx, 8, len(migTenants), func(i int) bool {
		_, ok := g.deliver(ctx, "setup install", i, http.StatusNoContent, func(ctx context.Context, app string) simulator.Answer {
			return fleet.Install(ctx, app, migTenants[i])
		})
		return ok
	}); failed > 0 {
		t.Fatalf("%d of %d migrating tenants not installed", failed, len(migTenants))
	}
	if !poll(90*time.Second, 100*time.Millisecond, func() bool {
		for _, mt := range migTenants {
			if !fleet.Initialized(mt) {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the migrating tenants were not initialized within 90 s")
	}
	setupDone := time.Now()
	out("set-up: 2 receivers and 3 workers ready, %d migrating tenants installed and initialized in %s",
		p.transfers, setupDone.Sub(wallStart).Round(time.Millisecond))

	plan, uploads := scalePlan(fleet, migTenants, p)
	storm := make([]*simulator.Tenant, p.installs)
	for i := range storm {
		storm[i] = fleet.NewTenant("storm")
	}

	// The run: migration events and the storm at once, the faults mid-way.
	runStart := time.Now()
	var migAcked, stormAcked atomic.Int64
	var wg, faults sync.WaitGroup // the load; the faults
	queue := make(chan *scaleSend)
	for w := range scaleMigrationSenders {
		wg.Go(func() {
			n := w
			for s := range queue {
				n++
				for _, dep := range append(slices.Clone(s.after), s.orig) {
					if dep == nil {
						continue
					}
					select {
					case <-dep.done:
					case <-ctx.Done():
					}
				}
				if s.orig != nil && s.orig.ok {
					// A re-delivery never carries the token of the original:
					// not in the same second as its acknowledgement.
					if wait := time.Until(s.orig.ackAt.Truncate(time.Second).Add(time.Second)); wait > 0 {
						time.Sleep(wait)
					}
				}
				s.sentAt = time.Now()
				s.ackAt, s.ok = g.deliver(ctx, "migration event", n, http.StatusOK, func(ctx context.Context, app string) simulator.Answer {
					return fleet.SendMigrationEvent(ctx, app, s.tenant, s.ev)
				})
				if s.ok {
					migAcked.Add(1)
				}
				close(s.done)
			}
		})
	}
	wg.Go(func() {
		defer close(queue)
		for _, s := range plan {
			select {
			case queue <- s:
			case <-ctx.Done():
				return
			}
		}
	})
	// The storm is paced by the migration's progress, so that it spans the
	// whole run, the faults included.
	stormFailed := 0
	var stormMu sync.Mutex
	wg.Go(func() {
		failed := runBounded(ctx, scaleInstallSenders, len(storm), func(i int) bool {
			for migAcked.Load()*int64(p.installs) < int64(i)*int64(len(plan))*9/10 && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			_, ok := g.deliver(ctx, "install storm", i, http.StatusNoContent, func(ctx context.Context, app string) simulator.Answer {
				return fleet.Install(ctx, app, storm[i])
			})
			if ok {
				stormAcked.Add(1)
			}
			return ok
		})
		stormMu.Lock()
		stormFailed = failed
		stormMu.Unlock()
	})
	// The faults: a worker SIGKILLed once a quarter of the events is in and
	// uploads are being imported (the lifecycle queue goes first, so that may
	// be after the last event is sent); a receiver SIGTERMed and started
	// again at half the events.
	var (
		faultMu         sync.Mutex
		faultErr        error
		importingAtKill = -1
		killAt          time.Time
		restartTook     time.Duration
	)
	waitAcked := func(frac float64) bool {
		for float64(migAcked.Load()) < frac*float64(len(plan)) {
			if ctx.Err() != nil {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	}
	faults.Go(func() {
		if !waitAcked(0.25) {
			return
		}
		// Uploads are being imported, and the victim runs migration tasks
		// (as its last asynq heartbeat, at most 5 s old, tells).
		importing := 0
		var held []string
		poll(time.Until(deadlineOf(ctx))/2, 10*time.Millisecond, func() bool {
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			defer qcancel()
			if pool.QueryRow(qctx, `SELECT count(*) FROM migration_uploads WHERE state = 'importing'`).Scan(&importing) != nil || importing == 0 {
				return false
			}
			servers, err := inspector.Servers()
			if err != nil {
				return false
			}
			held = held[:0]
			for _, srv := range servers {
				if srv.PID != workers[2].Pid() {
					continue
				}
				for _, w := range srv.ActiveWorkers {
					held = append(held, w.TaskType)
				}
			}
			return slices.ContainsFunc(held, func(tt string) bool { return strings.HasPrefix(tt, "migration:") })
		})
		faultMu.Lock()
		killAt, importingAtKill = time.Now(), importing
		faultMu.Unlock()
		workers[2].Kill()
		out("+%s SIGKILL %s (pid %d) running %v; %d uploads importing fleet-wide", time.Since(runStart).Round(time.Millisecond),
			workers[2].name, workers[2].Pid(), held, importing)
	})
	faults.Go(func() {
		if !waitAcked(0.5) {
			return
		}
		old := recvProcs[1]
		g.mu.Lock()
		g.restarting, g.restartFrom = receivers[1], time.Now()
		g.mu.Unlock()
		out("+%s SIGTERM %s (pid %d)", time.Since(runStart).Round(time.Millisecond), old.name, old.Pid())
		var errs []error
		defer func() {
			faultMu.Lock()
			faultErr = errors.Join(append(errs, faultErr)...)
			faultMu.Unlock()
		}()
		if err := old.Stop(30 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("graceful stop of %s: %w", old.name, err))
		}
		again, err := start(old.name+"-restarted", bins["receiver"], old.env, old.ready)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if !waitReady(again, 60*time.Second) {
			errs = append(errs, fmt.Errorf("%s not ready again within 60 s", again.name))
			return
		}
		g.mu.Lock()
		g.restartTo = time.Now()
		took := g.restartTo.Sub(g.restartFrom)
		g.mu.Unlock()
		faultMu.Lock()
		restartTook = took
		faultMu.Unlock()
		out("+%s %s ready again (pid %d), %s after the SIGTERM", time.Since(runStart).Round(time.Millisecond), old.name, again.Pid(), took.Round(time.Millisecond))
	})
	// Progress, every 10 s, until the load is sent.
	sent := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sent:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				out("+%s %d/%d events and %d/%d installs acknowledged", time.Since(runStart).Round(time.Second),
					migAcked.Load(), len(plan), stormAcked.Load(), p.installs)
			}
		}
	}()
	wg.Wait()
	close(sent)
	loadTook := time.Since(runStart)
	out("+%s load sent: %d/%d events, %d/%d installs acknowledged", loadTook.Round(time.Millisecond), migAcked.Load(), len(plan), stormAcked.Load(), p.installs)
	faults.Wait()

	// Settle: every transfer settled, every tenant initialized, no task left.
	allKeys := make([]string, 0, len(storm)+len(migTenants))
	for _, tn := range append(slices.Clone(storm), migTenants...) {
		allKeys = append(allKeys, tn.ClientKey())
	}
	webhookURL := baseURL + "/migration/events"
	var st scaleState
	settled := poll(time.Until(deadlineOf(ctx))-20*time.Second, 500*time.Millisecond, func() bool {
		st = readScaleState(ctx, pool, inspector, allKeys, webhookURL)
		return st.err == nil && st.transfersSettled == p.transfers && st.initialized == len(allKeys) &&
			st.tasks.active+st.tasks.pending+st.tasks.retry+st.tasks.archived == 0
	})
	settleTook := time.Since(runStart)
	// A moment for anything that should not happen (a second settle, a late
	// task) to happen.
	time.Sleep(2 * time.Second)
	st = readScaleState(ctx, pool, inspector, allKeys, webhookURL)
	if st.err != nil {
		t.Errorf("reading the outcome: %v", st.err)
	}

	// The killed worker's tasks: the workers' sweep requeues a task whose
	// lease expired (its worker died), and asynq's recoverer retries one
	// that the sweep left to it; when?
	swept, sweptFirst, sweptLast := sweptTasks(t, logDir, killAt)
	recovered, recoveredFirst, recoveredLast := leaseExpiredTasks(inspector, killAt)

	// The product's view of every transfer and upload.
	settleCalls, transfersOnce, redownloaded, neverDownloaded, refused := 0, 0, 0, 0, 0
	for i, mt := range migTenants {
		s := mt.Settles(scaleTransferID(i))
		settleCalls += len(s)
		if len(s) == 1 && s[0] == "SUCCESS" {
			transfersOnce++
		}
		refused += mt.Refused()
	}
	for _, sn := range storm {
		refused += sn.Refused()
	}
	for _, u := range uploads {
		_, complete := u.tenant.Downloads(u.key)
		switch {
		case complete == 0:
			neverDownloaded++
		case complete > 1:
			redownloaded++
		}
	}
	importedOK, importedBad := 0, 0
	for _, u := range uploads {
		rec, ok := st.imported[u.transferID+" "+u.key]
		if ok && rec.size == u.size && rec.sha == simulator.UploadDigest(u.key, u.size) {
			importedOK++
		} else if ok {
			importedBad++
		}
	}
	earlyAcked, dupsAfterRestart := 0, 0
	ltSent := map[string]time.Time{}
	for _, s := range plan {
		if s.orig == nil && s.ev.Type == simulator.EventListenerTriggered {
			ltSent[s.ev.TransferID] = s.sentAt
		}
	}
	for _, s := range plan {
		if s.orig == nil && s.ev.Type == simulator.EventUploaded && s.ok && s.ackAt.Before(ltSent[s.ev.TransferID]) {
			earlyAcked++
		}
		if s.orig != nil && s.ok && !g.restartTo.IsZero() && s.orig.ackAt.Before(g.restartFrom) && s.sentAt.After(g.restartTo) {
			dupsAfterRestart++
		}
	}
	acked := 0
	for _, s := range plan {
		if s.ok {
			acked++
		}
	}

	// The counts.
	g.mu.Lock()
	out("---- scale run: counts ----")
	out("migration events sent          %d acknowledged of %d planned (%d distinct, %d duplicates = %.1f %%)",
		acked, len(plan), p.distinct, p.duplicates, 100*float64(p.duplicates)/float64(p.events))
	out("  duplicates after the restart %d (re-deliveries of events acknowledged before the SIGTERM)", dupsAfterRestart)
	out("  uploads acked before their listener-triggered  %d (of %d transfers x %d)", earlyAcked, p.transfers, scaleEarlyUploads)
	out("  uploads parked by a worker before their listener-triggered  %d", st.parked)
	out("install storm                  %d acknowledged of %d", stormAcked.Load(), p.installs)
	for _, kind := range []string{"setup install", "migration event", "install storm"} {
		c := g.counts[kind]
		if c == nil {
			continue
		}
		for i, ph := range scalePhases {
			out("  %-16s %-36s 2xx %6d  4xx %d  5xx %d  no answer %d", kind, ph, c[i].ok, c[i].c4xx, c[i].c5xx, c[i].conn)
		}
	}
	if !killAt.IsZero() {
		out("faults                         SIGKILL worker-3 at +%s with %d uploads importing; SIGTERM receiver-2 at +%s, ready again %s later",
			killAt.Sub(runStart).Round(time.Millisecond), importingAtKill, g.restartFrom.Sub(runStart).Round(time.Millisecond), restartTook.Round(time.Millisecond))
	}
	out("  killed worker's tasks        %d requeued by the workers' sweep (lease expired), %s to %s after the SIGKILL; %d retried by asynq's recoverer, completed %s to %s after it",
		swept, sweptFirst.Round(time.Second), sweptLast.Round(time.Second),
		recovered, recoveredFirst.Round(time.Second), recoveredLast.Round(time.Second))
	out("5xx or no answer               %d during the restart of receiver-2 (%s), %d outside", g.inWindow, restartTook.Round(time.Millisecond), g.outside)
	out("uploads imported               %d of %d distinct uploads, each once with the served bytes (%d wrong, %d records in all)",
		importedOK, len(uploads), importedBad, len(st.imported))
	out("  upload states                %v", st.uploadStates)
	out("  downloads                    %d uploads downloaded completely twice or more (the killed worker had %d at most in flight), %d never",
		redownloaded, scaleWorkerConcurrency, neverDownloaded)
	out("  events recorded              %d distinct (deliveries reaching a worker %d)", st.eventRows, st.eventDeliveries)
	out("transfers settled              %d of %d in the database; %d settled exactly once SUCCESS at the product (%d settle calls)",
		st.transfersSettled, p.transfers, transfersOnce, settleCalls)
	out("tasks left                     active %d, pending %d, retrying %d, archived %d (scheduled %d)",
		st.tasks.active, st.tasks.pending, st.tasks.retry, st.tasks.archived, st.tasks.scheduled)
	out("installs stored                %d of %d storm tenants (+%d migrating); %d of %d initialized; %d refused JWTs at the product",
		st.stormStored(storm), p.installs, p.transfers, st.initialized, len(allKeys), refused)
	out("wall time                      %s (set-up %s, load sent in %s, settled %s after the load started)",
		time.Since(wallStart).Round(time.Millisecond), setupDone.Sub(wallStart).Round(time.Millisecond),
		loadTook.Round(time.Millisecond), settleTook.Round(time.Millisecond))
	out("process logs                   %s", logDir)
	inWindow, outside, outsideSeen, c4xxSeen := g.inWindow, g.outside, g.outsideSeen, g.c4xxSeen
	g.mu.Unlock()

	// The verdict.
	if faultErr != nil {
		t.Error(faultErr)
	}
	if importingAtKill <= 0 || swept+recovered == 0 {
		t.Errorf("the worker was not killed mid-import: %d uploads importing, %d of its tasks taken over after it", importingAtKill, swept+recovered)
	}
	if killAt.IsZero() || g.restartTo.IsZero() {
		t.Errorf("the faults did not all happen (kill at %v, restart done at %v)", killAt, g.restartTo)
	}
	if acked != len(plan) {
		t.Errorf("%d of %d migration events acknowledged", acked, len(plan))
	}
	stormMu.Lock()
	if stormFailed != 0 || int(stormAcked.Load()) != p.installs {
		t.Errorf("install storm: %d of %d acknowledged, %d failed", stormAcked.Load(), p.installs, stormFailed)
	}
	stormMu.Unlock()
	if outside != 0 {
		t.Errorf("%d 5xx or unanswered requests outside the restart window, e.g. %v", outside, outsideSeen)
	}
	if len(c4xxSeen) != 0 {
		t.Errorf("4xx answers to correctly signed requests, e.g. %v", c4xxSeen)
	}
	if inWindow == 0 && outside == 0 {
		t.Logf("note: no request met the restart window")
	}
	if earlyAcked < p.transfers {
		t.Errorf("%d uploads acknowledged before their listener-triggered, want at least one per transfer (%d)", earlyAcked, p.transfers)
	}
	if st.parked < p.transfers {
		t.Errorf("%d uploads parked before their listener-triggered, want at least %d", st.parked, p.transfers)
	}
	if dupsAfterRestart == 0 {
		t.Errorf("no duplicate of an event acknowledged before the restart was sent after it")
	}
	if !settled {
		t.Errorf("not settled before the deadline")
	}
	if importedOK != len(uploads) || len(st.imported) != len(uploads) {
		t.Errorf("uploads imported: %d right of %d, %d records", importedOK, len(uploads), len(st.imported))
	}
	if st.uploadStates["imported"] != len(uploads) || len(st.uploadStates) != 1 {
		t.Errorf("upload states %v, want all %d imported", st.uploadStates, len(uploads))
	}
	if neverDownloaded != 0 || redownloaded > scaleWorkerConcurrency {
		t.Errorf("downloads: %d never, %d twice or more (at most %d expected: the killed worker's)", neverDownloaded, redownloaded, scaleWorkerConcurrency)
	}
	if st.eventRows != p.distinct {
		t.Errorf("%d migration events recorded, want %d (one per distinct messageId)", st.eventRows, p.distinct)
	}
	if st.transfersSettled != p.transfers || transfersOnce != p.transfers || settleCalls != p.transfers {
		t.Errorf("transfers: %d settled in the database, %d once SUCCESS at the product, %d settle calls; want %d each",
			st.transfersSettled, transfersOnce, settleCalls, p.transfers)
	}
	if st.tasks.active+st.tasks.retry+st.tasks.archived+st.tasks.pending != 0 {
		t.Errorf("tasks left: %+v", st.tasks)
	}
	if n := st.stormStored(storm); n != p.installs || st.initialized != len(allKeys) {
		t.Errorf("installs: %d of %d storm tenants stored, %d of %d tenants initialized", n, p.installs, st.initialized, len(allKeys))
	}
	for _, tn := range storm {
		if !fleet.Initialized(tn) {
			t.Errorf("storm tenant %s not initialized at the product (license read, webhook registered)", tn.ClientKey())
			break
		}
	}
	if refused != 0 {
		t.Errorf("%d worker calls with a JWT the product refused", refused)
	}
	// Everything else still runs, and stops cleanly.
	for _, sp := range procs {
		if sp == workers[2] || sp == recvProcs[1] {
			continue // killed, stopped and restarted
		}
		if err := sp.Stop(30 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", sp.name, err)
		}
	}
}

// scaleUpload is one upload of the plan.
type scaleUpload struct {
	tenant          *simulator.Tenant
	transferID, key string
	size            int64
}

func scaleTransferID(i int) string { return fmt.Sprintf("tr-scale-%04d", i) }

// scalePlan lays out the migration: per transfer, its early uploads, its
// listener-triggered, then the rest of its uploads, the final one last; the
// transfers interleaved; each duplicate placed a while after its original.
func scalePlan(fleet *simulator.Fleet, tenants []*simulator.Tenant, p scaleParams) ([]*scaleSend, []scaleUpload) {
	var uploads []scaleUpload
	perTransfer := make([][]*scaleSend, len(tenants))
	for i, tn := range tenants {
		tr := scaleTransferID(i)
		var early []*scaleSend
		for j := 1; j <= scaleUploadsPerTransfer; j++ {
			label := fmt.Sprintf("part-%d", j)
			if j == scaleUploadsPerTransfer {
				label = "final"
			}
			size := int64(2048 + 16*j)
			key := fleet.AddUpload(tn, tr, label, size)
			uploads = append(uploads, scaleUpload{tenant: tn, transferID: tr, key: key, size: size})
			s := &scaleSend{tenant: tn, ev: simulator.MigrationEvent{Type: simulator.EventUploaded, TransferID: tr, S3Key: key, Label: label,
				MessageID: "m-" + key}, done: make(chan struct{})}
			perTransfer[i] = append(perTransfer[i], s)
			if j <= scaleEarlyUploads {
				early = append(early, s)
			}
			if j == scaleEarlyUploads {
				lt := &scaleSend{tenant: tn, ev: simulator.MigrationEvent{Type: simulator.EventListenerTriggered, TransferID: tr,
					MessageID: "m-" + tr + "-lt"}, after: early, done: make(chan struct{})}
				perTransfer[i] = append(perTransfer[i], lt)
			}
		}
	}
	var originals []*scaleSend
	for k := range scaleUploadsPerTransfer + 1 {
		for i := range perTransfer {
			originals = append(originals, perTransfer[i][k])
		}
	}
	type placed struct {
		at float64
		s  *scaleSend
	}
	all := make([]placed, 0, p.events)
	for i, s := range originals {
		all = append(all, placed{float64(i), s})
	}
	rng := mrand.New(mrand.NewPCG(14, 7))
	lo, hi := max(1, len(originals)/35), max(2, len(originals)*2/7)
	for _, i := range rng.Perm(len(originals))[:p.duplicates] {
		o := originals[i]
		d := &scaleSend{tenant: o.tenant, ev: o.ev, orig: o, done: make(chan struct{})}
		all = append(all, placed{float64(i+lo+rng.IntN(hi-lo)) + 0.5, d})
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].at < all[b].at })
	plan := make([]*scaleSend, len(all))
	for i, pl := range all {
		plan[i] = pl.s
	}
	return plan, uploads
}

// runBounded runs each(0..n-1) on at most conc goroutines and returns how
// many returned false (or were not run before ctx ended).
func runBounded(ctx context.Context, conc, n int, each func(i int) bool) int {
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for i := range next {
				if !each(i) {
					failed.Add(1)
				}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			failed.Add(int64(n - i))
			close(next)
			wg.Wait()
			return int(failed.Load())
		}
	}
	close(next)
	wg.Wait()
	return int(failed.Load())
}

// scaleState is what the database and the queues say after the run.
type scaleState struct {
	err                        error
	transfersSettled           int
	initialized                int
	stored                     map[string]bool
	imported                   map[string]scaleImported // by transfer and s3Key
	uploadStates               map[string]int
	parked                     int
	eventRows, eventDeliveries int
	tasks                      struct{ active, pending, retry, archived, scheduled int }
}

// scaleImported is what the recording importer wrote of an upload.
type scaleImported struct {
	size int64
	sha  string
}

func (s scaleState) stormStored(storm []*simulator.Tenant) int {
	n := 0
	for _, tn := range storm {
		if s.stored[tn.ClientKey()] {
			n++
		}
	}
	return n
}

func readScaleState(ctx context.Context, pool *pgxpool.Pool, in *asynq.Inspector, keys []string, webhookURL string) scaleState {
	var s scaleState
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fail := func(what string, err error) scaleState {
		s.err = fmt.Errorf("%s: %w", what, err)
		return s
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM migration_transfers
		WHERE state = 'succeeded' AND settle_status = 'SUCCESS' AND settled_at IS NOT NULL AND settle_result = 'reported'`).Scan(&s.transfersSettled); err != nil {
		return fail("transfers", err)
	}
	s.stored = map[string]bool{}
	var ck string
	var init bool
	rows, err := pool.Query(ctx, `SELECT client_key, license_checked_at IS NOT NULL AND webhook_endpoints = ARRAY[$2::text]
		FROM tenants WHERE installed AND client_key = ANY($1)`, keys, webhookURL)
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&ck, &init}, func() error {
			s.stored[ck] = true
			if init {
				s.initialized++
			}
			return nil
		})
	}
	if err != nil {
		return fail("tenants", err)
	}
	s.imported = map[string]scaleImported{}
	var tr, key string
	var rec scaleImported
	rows, err = pool.Query(ctx, `SELECT transfer_id, s3_key, size_bytes, sha256 FROM migration_imported_data`)
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&tr, &key, &rec.size, &rec.sha}, func() error {
			s.imported[tr+" "+key] = rec
			return nil
		})
	}
	if err != nil {
		return fail("imported data", err)
	}
	s.uploadStates = map[string]int{}
	var state string
	var n int
	rows, err = pool.Query(ctx, `SELECT state, count(*) FROM migration_uploads GROUP BY state`)
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
			s.uploadStates[state] = n
			return nil
		})
	}
	if err != nil {
		return fail("uploads", err)
	}
	// An upload recorded before its transfer was ready was parked until the
	// listener-triggered.
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM migration_uploads u JOIN migration_transfers t USING (transfer_id)
		WHERE t.ready_at IS NOT NULL AND u.created_at < t.ready_at`).Scan(&s.parked); err != nil {
		return fail("parked uploads", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(deliveries), 0) FROM migration_events`).Scan(&s.eventRows, &s.eventDeliveries); err != nil {
		return fail("events", err)
	}
	queues, err := in.Queues() // the queues that ever had a task
	if err != nil {
		return fail("queues", err)
	}
	for _, q := range queues {
		info, err := in.GetQueueInfo(q)
		if err != nil {
			return fail("queue "+q, err)
		}
		s.tasks.active += info.Active
		s.tasks.pending += info.Pending
		s.tasks.retry += info.Retry
		s.tasks.archived += info.Archived
		s.tasks.scheduled += info.Scheduled
	}
	return s
}

// sweptTasks counts the workers' log lines of a task requeued because its
// lease expired, and how long after since the first and the last came.
func sweptTasks(t *testing.T, logDir string, since time.Time) (n int, first, last time.Duration) {
	t.Helper()
	if since.IsZero() {
		return 0, 0, 0
	}
	files, err := filepath.Glob(filepath.Join(logDir, "worker-*.log"))
	if err != nil {
		t.Errorf("worker logs: %v", err)
		return 0, 0, 0
	}
	first = time.Duration(math.MaxInt64)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("worker log: %v", err)
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "lease expired (its worker stopped); requeued") {
				continue
			}
			var rec struct {
				Time time.Time `json:"time"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			n++
			d := rec.Time.Sub(since)
			first, last = min(first, d), max(last, d)
		}
	}
	if n == 0 {
		first = 0
	}
	return n, first, last
}

// leaseExpiredTasks counts the completed tasks that asynq's recoverer had
// retried (their lease expired: their worker died) and how long after since
// the first and the last of them completed.
func leaseExpiredTasks(in *asynq.Inspector, since time.Time) (n int, first, last time.Duration) {
	queues, err := in.Queues()
	if err != nil || since.IsZero() {
		return 0, 0, 0
	}
	first = time.Duration(math.MaxInt64)
	for _, q := range queues {
		for page := 1; page <= 100; page++ {
			infos, err := in.ListCompletedTasks(q, asynq.PageSize(1000), asynq.Page(page))
			if err != nil || len(infos) == 0 {
				break
			}
			for _, ti := range infos {
				if !strings.Contains(ti.LastErr, "lease expired") {
					continue
				}
				n++
				d := ti.CompletedAt.Sub(since)
				first, last = min(first, d), max(last, d)
			}
		}
	}
	if n == 0 {
		first = 0
	}
	return n, first, last
}

func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(time.Hour)
	}
	return d
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
