package migration_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/product"
)

const (
	installation = "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5"
	systemToken  = "forge-system-token-for-tests-0123456789"
)

// forgePlatform plays the Forge migration API and its storage on loopback, as
// product.ForgeAMP calls them: presigned data URLs, the upload list, message
// statuses and the progress log. Once settled (settle), every call answers
// 409 as the platform does.
type forgePlatform struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	statuses map[string][]string // messageId -> statuses accepted, in order
	refused  map[string]int      // messageId -> status calls answered 409
	logs     []string
	listed   map[string][]string // transferId -> keys the upload list names
	failAcks int                 // status calls still to answer 503
	settled  bool
	badAuth  int
}

func newForgePlatform(t *testing.T) *forgePlatform {
	p := &forgePlatform{t: t, statuses: map[string][]string{}, refused: map[string]int{}, listed: map[string][]string{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

const forgeAPI = "/app/migration/forge/v1/"

func (p *forgePlatform) serve(w http.ResponseWriter, r *http.Request) {
	if key, ok := strings.CutPrefix(r.URL.Path, "/storage/"); ok {
		if r.Header.Get("Authorization") != "" {
			p.t.Errorf("storage got an Authorization header")
		}
		_, _ = io.Copy(w, content(key, 4<<10+int64(len(key))))
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), forgeAPI)
	if !ok {
		p.t.Errorf("unexpected call %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+systemToken {
		p.badAuth++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	parts := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "message" && parts[2] == "status":
		var body struct {
			Status     string   `json:"status"`
			MessageIDs []string `json:"messageIds"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.MessageIDs) == 0 {
			p.t.Errorf("status body: %v %+v", err, body)
		}
		if p.failAcks > 0 {
			p.failAcks--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if p.settled {
			for _, id := range body.MessageIDs {
				p.refused[id]++
			}
			p.conflict(w)
			return
		}
		for _, id := range body.MessageIDs {
			p.statuses[id] = append(p.statuses[id], body.Status)
		}
	case r.Method == http.MethodPost && len(parts) == 2 && parts[0] == "log":
		if p.settled {
			p.conflict(w)
			return
		}
		var body struct{ Message string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		p.logs = append(p.logs, body.Message)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "data" && parts[2] == "all":
		var out []map[string]string
		for _, k := range p.listed[parts[1]] {
			out = append(out, map[string]string{"key": k})
		}
		_ = json.NewEncoder(w).Encode(out)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "data":
		if p.settled {
			p.conflict(w)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"url": p.srv.URL + "/storage/" + parts[1] + "?X-Amz-Signature=s"})
	default:
		p.t.Errorf("unexpected Forge call %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	}
}

func (p *forgePlatform) conflict(w http.ResponseWriter) {
	w.WriteHeader(http.StatusConflict)
	_, _ = io.WriteString(w, `{"message":"Transfer 'x' is already in a settled state, no further actions are allowed"}`)
}

func (p *forgePlatform) snapshot() (map[string][]string, map[string]int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := map[string][]string{}
	for k, v := range p.statuses {
		st[k] = slices.Clone(v)
	}
	ref := map[string]int{}
	for k, v := range p.refused {
		ref[k] = v
	}
	return st, ref, slices.Clone(p.logs)
}

func (p *forgePlatform) set(f func(p *forgePlatform)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

type forgeCreds struct{ base string }

func (c forgeCreds) ForgeCredentials(_ context.Context, id string) (product.ForgeCredentials, error) {
	if id != installation {
		return product.ForgeCredentials{}, product.ErrNoSystemToken
	}
	return product.ForgeCredentials{APIBaseURL: c.base + "/ex/jira/d0d52620-3203-4cfa-8db5-f2587155f0dd",
		Token: systemToken, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

// forgeMachine is a machine whose AMP routes Forge installations to a real
// product.ForgeAMP calling the fake platform, and Connect tenants to the fake
// Connect AMP.
func forgeMachine(t *testing.T, b *bundle, p *forgePlatform) *migration.Machine {
	t.Helper()
	fa, err := product.NewForgeAMP(product.ForgeAMPConfig{
		Credentials: forgeCreds{base: p.srv.URL},
		APIHosts:    []string{"127.0.0.1"},
		HTTP:        product.Config{MaxAttempts: 1, Logger: testLogger()},
	}, product.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := migration.NewMachine(b.pool, migration.Router{Connect: b.amp, Forge: fa}, b.count, b.queue,
		migration.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// forgeEvent parses a Forge event body as the worker does.
func forgeEvent(t *testing.T, eventType, transferID, extra string) migration.Event {
	t.Helper()
	body := `{"eventType":"` + eventType + `","transferId":"` + transferID + `","migrationDetails":` + forgeDetails
	if extra != "" {
		body += "," + extra
	}
	body += "}"
	ev, err := migration.ParseEventOf(installation, []byte(body))
	if err != nil {
		t.Fatalf("parse %s: %v", body, err)
	}
	return ev
}

func forgeTransferOf(t *testing.T, ctx context.Context, m *migration.Machine, transferID string) connectrelay.Transfer {
	t.Helper()
	tr, err := m.Transfer(ctx, installation, transferID)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func handleForge(t *testing.T, ctx context.Context, m *migration.Machine, ev migration.Event) {
	t.Helper()
	if err := m.HandleEvent(ctx, installation, ev); err != nil {
		t.Fatalf("HandleEvent(%s): %v", ev.ForgeType, err)
	}
}

// A Forge migration whose uploads arrive before triggered:listener and twice:
// every upload is imported once, every message gets SUCCESS once, and the
// transfer is settled once.
func TestForgeMigrationOutOfOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := newForgePlatform(t)
	ctx := ctxT(t, 60*time.Second)
	m := forgeMachine(t, b, p)
	const tid = "11111111-2222-4333-8444-555555555555"
	p.set(func(p *forgePlatform) { p.listed[tid] = []string{"s3/a", "s3/b"} })

	upA := forgeEvent(t, migration.ForgeEventAppDataUploaded, tid, `"key":"s3/a","label":"part","messageId":"m-a"`)
	handleForge(t, ctx, m, upA)
	handleForge(t, ctx, m, upA) // re-delivered past the task dedupe
	if st := uploadStates(t, ctx, m, tid); st["s3/a"] != migration.UploadParked {
		t.Fatalf("upload before triggered:listener: %v, want parked", st)
	}
	if statuses, _, _ := p.snapshot(); len(statuses) != 0 {
		t.Fatalf("statuses sent before anything was processed: %v", statuses)
	}
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventListenerTriggered, tid, `"messageId":"m-l"`))
	b.queue.drain(t, ctx, m)
	if statuses, _, _ := p.snapshot(); !cmp.Equal(statuses, map[string][]string{"m-l": {"SUCCESS"}, "m-a": {"SUCCESS"}}) {
		t.Fatalf("statuses after the first import: %v", statuses)
	}

	upB := forgeEvent(t, migration.ForgeEventAppDataUploaded, tid, `"key":"s3/b","label":"final","messageId":"m-b"`)
	handleForge(t, ctx, m, upB)
	handleForge(t, ctx, m, upB)
	b.queue.drain(t, ctx, m)
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventExportPhaseCompleted, tid, `"messageId":"m-x"`))
	handleForge(t, ctx, m, upB) // after success: nothing more
	b.queue.drain(t, ctx, m)
	if _, err := m.SettlePending(ctx, 10); err != nil {
		t.Fatalf("SettlePending: %v", err)
	}

	for _, k := range []string{"s3/a", "s3/b"} {
		if n := b.count.count(k); n != 1 {
			t.Errorf("%s imported %d times, want 1", k, n)
		}
	}
	statuses, refused, logs := p.snapshot()
	want := map[string][]string{"m-l": {"SUCCESS"}, "m-a": {"SUCCESS"}, "m-b": {"SUCCESS"}}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("message statuses (-want +got):\n%s", diff)
	}
	if len(refused) != 0 {
		t.Errorf("statuses refused: %v", refused)
	}
	var settles []string
	for _, l := range logs {
		if !strings.HasPrefix(l, product.StatusInProgress) {
			settles = append(settles, l)
		}
	}
	if len(settles) != 1 || !strings.HasPrefix(settles[0], "SUCCESS 100%") {
		t.Errorf("settle log lines = %q, want one SUCCESS", settles)
	}
	tr := forgeTransferOf(t, ctx, m, tid)
	if tr.State != connectrelay.TransferSucceeded || tr.SettledAt.IsZero() || tr.SettleResult != connectrelay.SettleReported {
		t.Errorf("transfer = %s settled %v (%s), want succeeded and settled once", tr.State, tr.SettledAt, tr.SettleResult)
	}
	msgs, err := m.ForgeMessages(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	for _, fm := range msgs {
		if fm.Status != product.MessageSuccess || fm.Result != connectrelay.SettleReported || fm.Attempts != 1 {
			t.Errorf("message %+v, want SUCCESS reported in one attempt", fm)
		}
	}
	if len(msgs) != 3 {
		t.Errorf("%d messages recorded, want 3 (export_phase owes none): %+v", len(msgs), msgs)
	}
	if b.amp.listCount(tid) != 0 || len(b.amp.calls(tid)) != 0 {
		t.Error("a Forge transfer reached the Connect AMP")
	}
	p.mu.Lock()
	if p.badAuth != 0 {
		t.Errorf("%d calls without the bearer system token", p.badAuth)
	}
	p.mu.Unlock()
}

// A listener error fails the transfer: the imported upload keeps its
// SUCCESS, the upload not imported gets FAILED, once each; the platform
// settling answers 409 to what follows, which is recorded as final.
func TestForgeListenerErroredFailsOpenMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := newForgePlatform(t)
	ctx := ctxT(t, 60*time.Second)
	m := forgeMachine(t, b, p)
	const tid = "22222222-2222-4333-8444-555555555555"

	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventListenerTriggered, tid, `"messageId":"m-l"`))
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventAppDataUploaded, tid, `"key":"s3/a","messageId":"m-a"`))
	b.queue.drain(t, ctx, m)
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventAppDataUploaded, tid, `"key":"s3/b","messageId":"m-b"`))
	b.queue.take() // s3/b's import never runs
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventListenerErrored, tid, `"messageId":"m-e"`))

	statuses, _, logs := p.snapshot()
	want := map[string][]string{"m-l": {"SUCCESS"}, "m-a": {"SUCCESS"}, "m-b": {"FAILED"}}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("message statuses (-want +got):\n%s", diff)
	}
	if len(logs) == 0 || !strings.HasPrefix(logs[len(logs)-1], "FAILED") {
		t.Errorf("logs = %q, want the FAILED settle last", logs)
	}
	if tr := forgeTransferOf(t, ctx, m, tid); tr.State != connectrelay.TransferFailed || tr.SettledAt.IsZero() {
		t.Errorf("transfer %s settled %v, want failed and settled", tr.State, tr.SettledAt)
	}

	// The platform settled; a late upload of the closed transfer owes FAILED,
	// which it refuses with 409: recorded, never sent again.
	p.set(func(p *forgePlatform) { p.settled = true })
	handleForge(t, ctx, m, forgeEvent(t, migration.ForgeEventAppDataUploaded, tid, `"key":"s3/c","messageId":"m-c"`))
	if _, err := m.SettlePending(ctx, 10); err != nil {
		t.Fatalf("SettlePending: %v", err)
	}
	_, refused, _ := p.snapshot()
	if diff := cmp.Diff(map[string]int{"m-c": 1}, refused); diff != "" {
		t.Errorf("statuses refused (-want +got):\n%s", diff)
	}
	msgs, err := m.ForgeMessages(ctx, tid)
	if err != nil {
		t.Fatal(err)
	}
	for _, fm := range msgs {
		if fm.AckedAt.IsZero() {
			t.Errorf("message %s still owed: %+v", fm.MessageID, fm)
		}
		if fm.MessageID == "m-c" && fm.Result != connectrelay.SettleAlreadySettled {
			t.Errorf("m-c result %q, want already_settled", fm.Result)
		}
	}
	if b.count.count("s3/b")+b.count.count("s3/c") != 0 {
		t.Error("an upload of the failed transfer was imported")
	}
}

// A status call that fails is made again by a later sweep, and sent once
// accepted; a Forge transfer on a worker without Forge support fails clearly.
func TestForgeFailedAcknowledgementIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := newForgePlatform(t)
	ctx := ctxT(t, 60*time.Second)
	m := forgeMachine(t, b, p)
	const tid = "33333333-2222-4333-8444-555555555555"

	p.set(func(p *forgePlatform) { p.failAcks = 1 })
	err := m.HandleEvent(ctx, installation, forgeEvent(t, migration.ForgeEventListenerTriggered, tid, `"messageId":"m-l"`))
	if !errors.Is(err, product.ErrServer) {
		t.Fatalf("HandleEvent with the platform down = %v, want the server error (retried)", err)
	}
	msgs, _ := m.ForgeMessages(ctx, tid)
	if len(msgs) != 1 || !msgs[0].AckedAt.IsZero() || msgs[0].LastError == "" {
		t.Fatalf("messages after a failed call: %+v", msgs)
	}
	if n, err := m.AcknowledgePending(ctx, 10); err != nil || n != 1 {
		t.Fatalf("AcknowledgePending = %d, %v; want 1 transfer", n, err)
	}
	if n, err := m.AcknowledgePending(ctx, 10); err != nil || n != 0 {
		t.Fatalf("AcknowledgePending again = %d, %v; want nothing owed", n, err)
	}
	statuses, _, _ := p.snapshot()
	if diff := cmp.Diff(map[string][]string{"m-l": {"SUCCESS"}}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}

	// Without Forge support the status cannot be sent: a clear error, and
	// the message stays owed.
	noForge, err := migration.NewMachine(b.pool, migration.Router{Connect: b.amp}, b.count, b.queue, migration.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	err = noForge.HandleEvent(ctx, installation, forgeEvent(t, migration.ForgeEventListenerTriggered, "44444444-2222-4333-8444-555555555555", `"messageId":"m-2"`))
	if !errors.Is(err, migration.ErrForgeNotConfigured) {
		t.Errorf("HandleEvent without Forge = %v, want ErrForgeNotConfigured", err)
	}
}
