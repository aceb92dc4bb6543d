package migration_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/product"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

const (
	tenant      = "jira:tenant-1"
	otherTenant = "jira:tenant-2"
)

// testLogger is quiet unless MIGRATION_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MIGRATION_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newPool gives the test a fresh, migrated database.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	pool, err := schema.Open(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := schema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// content is the deterministic data the fake product serves for an s3Key: the
// SHA-256 chain of the key, size bytes long.
func content(s3Key string, size int64) io.Reader {
	seed := sha256.Sum256([]byte(s3Key))
	block := make([]byte, 64<<10)
	for i := 0; i < len(block); i += sha256.Size {
		seed = sha256.Sum256(seed[:])
		copy(block[i:], seed[:])
	}
	return &patternReader{block: block, remaining: size}
}

// patternReader repeats block until remaining bytes were served: a reader of any
// size that stores nothing.
type patternReader struct {
	block     []byte
	off       int
	remaining int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	n := 0
	for n < len(b) {
		c := copy(b[n:], p.block[p.off:])
		n += c
		p.off = (p.off + c) % len(p.block)
	}
	p.remaining -= int64(n)
	return n, nil
}

func digest(t *testing.T, r io.Reader) (int64, string) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}

// progressCall is one ReportProgress the fake product received.
type progressCall struct {
	ClientKey  string
	TransferID string
	product.Progress
}

// fakeAMP plays the product's AMP API: it serves deterministic data, remembers
// every call, and behaves like the product once a transfer is settled (every later
// progress call answers "already settled").
type fakeAMP struct {
	mu          sync.Mutex
	sizes       map[string]int64 // s3Key -> size; default 4 KiB + len(key)
	opens       map[string]int
	progress    []progressCall
	settled     map[string]string // transferID -> status
	errDetails  json.RawMessage
	errDetailsE error
	openErr     error
	// progressErr, when set, is returned by ReportProgress (before any state change),
	// counting down progressErrN calls (forever when progressErrN < 0).
	progressErr  error
	progressErrN int
	// wrap, when set, wraps the data reader (to block or observe it).
	wrap func(ctx context.Context, s3Key string, r io.Reader) io.Reader
	// listed are the s3Keys ListData answers for a transfer, beyond nothing: by
	// default the product holds no upload the test did not announce, so it
	// answers an empty list. listErr, when set, is returned by ListData.
	listed    map[string][]string
	listErr   error
	listErrs  map[string]error // by transfer ID, after listErr
	listCalls map[string]int
	// hook, when set, runs at the start of ReportProgress and ListData (call is
	// the method's name), outside the fake's mutex; its error is returned.
	hook func(ctx context.Context, call, transferID string) error
	// mappings are what Mappings and FindMappings answer, by namespace;
	// feedback what Feedback received, by transfer.
	mappings map[string]map[string]string
	feedback map[string]any
}

func newFakeAMP() *fakeAMP {
	return &fakeAMP{
		sizes: map[string]int64{}, opens: map[string]int{}, settled: map[string]string{},
		listed: map[string][]string{}, listErrs: map[string]error{}, listCalls: map[string]int{},
		mappings: map[string]map[string]string{}, feedback: map[string]any{},
		errDetails: json.RawMessage(`{"exceptionType":"java.lang.IllegalStateException","safeStackTrace":"at Listener.run"}`),
	}
}

var _ migration.AMP = (*fakeAMP)(nil)

func (f *fakeAMP) size(s3Key string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.sizes[s3Key]; ok {
		return n
	}
	return 4<<10 + int64(len(s3Key))
}

func (f *fakeAMP) OpenData(ctx context.Context, clientKey, s3Key string) (io.ReadCloser, error) {
	f.mu.Lock()
	f.opens[s3Key]++
	err, wrap := f.openErr, f.wrap
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var r io.Reader = content(s3Key, f.size(s3Key))
	if wrap != nil {
		r = wrap(ctx, s3Key, r)
	}
	return io.NopCloser(r), nil
}

func (f *fakeAMP) runHook(ctx context.Context, call, transferID string) error {
	f.mu.Lock()
	hook := f.hook
	f.mu.Unlock()
	if hook == nil {
		return nil
	}
	return hook(ctx, call, transferID)
}

func (f *fakeAMP) ReportProgress(ctx context.Context, clientKey, transferID string, p product.Progress) error {
	if err := f.runHook(ctx, "ReportProgress", transferID); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.progressErr != nil && f.progressErrN != 0 {
		f.progressErrN--
		return f.progressErr
	}
	f.progress = append(f.progress, progressCall{ClientKey: clientKey, TransferID: transferID, Progress: p})
	if st, ok := f.settled[transferID]; ok {
		return fmt.Errorf("product: 403 transfer %s already settled as %s: %w", transferID, st, product.ErrTransferSettled)
	}
	if p.Status != product.StatusInProgress {
		f.settled[transferID] = p.Status
	}
	return nil
}

func (f *fakeAMP) ErrorDetails(ctx context.Context, clientKey, transferID string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errDetails, f.errDetailsE
}

func (f *fakeAMP) ListData(ctx context.Context, clientKey, transferID string) ([]product.Upload, error) {
	if err := f.runHook(ctx, "ListData", transferID); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls[transferID]++
	if f.listErr != nil {
		return nil, f.listErr
	}
	if err := f.listErrs[transferID]; err != nil {
		return nil, err
	}
	if st, ok := f.settled[transferID]; ok {
		return nil, fmt.Errorf("product: 403 transfer %s already settled as %s: %w", transferID, st, product.ErrTransferSettled)
	}
	var uploads []product.Upload
	for _, k := range f.listed[transferID] {
		uploads = append(uploads, product.Upload{S3Key: k})
	}
	return uploads, nil
}

// Mappings serves the mappings of f.mappings[namespace] in server ID order, in
// one page.
func (f *fakeAMP) Mappings(ctx context.Context, clientKey, transferID, namespace string, pageSize int) iter.Seq2[product.Mapping, error] {
	f.mu.Lock()
	m := maps.Clone(f.mappings[namespace])
	f.mu.Unlock()
	return func(yield func(product.Mapping, error) bool) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(product.Mapping{ServerID: k, CloudID: m[k]}, nil) {
				return
			}
		}
	}
}

// FindMappings answers the keys of f.mappings[namespace] that it knows.
func (f *fakeAMP) FindMappings(ctx context.Context, clientKey, transferID, namespace string, keys []string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	found := map[string]string{}
	for _, k := range keys {
		if v, ok := f.mappings[namespace][k]; ok {
			found[k] = v
		}
	}
	return found, nil
}

// Feedback records the details sent for a transfer, replacing earlier ones.
func (f *fakeAMP) Feedback(ctx context.Context, clientKey, transferID string, details any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.feedback[transferID] = details
	return nil
}

// setListErr makes ListData of transferID fail with err (nil: answer again).
func (f *fakeAMP) setListErr(transferID string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErrs[transferID] = err
}

func (f *fakeAMP) listCount(transferID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listCalls[transferID]
}

func (f *fakeAMP) openCount(s3Key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens[s3Key]
}

func (f *fakeAMP) calls(transferID string) []product.Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ps []product.Progress
	for _, c := range f.progress {
		if c.TransferID == transferID {
			ps = append(ps, c.Progress)
		}
	}
	return ps
}

func (f *fakeAMP) settleCalls(transferID string) []string {
	var st []string
	for _, p := range f.calls(transferID) {
		if p.Status != product.StatusInProgress {
			st = append(st, p.Status)
		}
	}
	return st
}

// queueScheduler records scheduled imports, like a queue nobody consumes yet.
type queueScheduler struct {
	mu   sync.Mutex
	refs []migration.UploadRef
	fail error // returned (once) instead of scheduling
}

func (q *queueScheduler) ScheduleImport(ctx context.Context, ref migration.UploadRef) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		err := q.fail
		q.fail = nil
		return err
	}
	q.refs = append(q.refs, ref)
	return nil
}

func (q *queueScheduler) take() []migration.UploadRef {
	q.mu.Lock()
	defer q.mu.Unlock()
	refs := q.refs
	q.refs = nil
	return refs
}

// drain runs every scheduled import on m, like a worker, until none is left.
func (q *queueScheduler) drain(t *testing.T, ctx context.Context, m *migration.Machine) {
	t.Helper()
	for {
		refs := q.take()
		if len(refs) == 0 {
			return
		}
		for _, ref := range refs {
			if err := m.Import(ctx, ref); err != nil {
				t.Fatalf("Import(%+v): %v", ref, err)
			}
		}
	}
}

// asyncScheduler runs each scheduled import at once in its own goroutine, the way
// a worker fleet with free capacity does, retrying ErrImportInProgress like asynq
// retries a failed task. The imports run under the scheduling context, which in
// these tests is the test's own (with its deadline).
type asyncScheduler struct {
	m    *migration.Machine
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	n    int
}

func (a *asyncScheduler) ScheduleImport(ctx context.Context, ref migration.UploadRef) error {
	a.mu.Lock()
	a.n++
	a.mu.Unlock()
	a.wg.Go(func() {
		for {
			err := a.m.Import(ctx, ref)
			if errors.Is(err, migration.ErrImportInProgress) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err != nil {
				a.mu.Lock()
				a.errs = append(a.errs, err)
				a.mu.Unlock()
			}
			return
		}
	})
	return nil
}

func (a *asyncScheduler) wait(t *testing.T) {
	t.Helper()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, err := range a.errs {
		t.Errorf("async import: %v", err)
	}
}

// countingImporter counts calls per s3Key and delegates.
type countingImporter struct {
	next  connectrelay.Importer
	mu    sync.Mutex
	calls map[string]int
}

func newCounting(next connectrelay.Importer) *countingImporter {
	return &countingImporter{next: next, calls: map[string]int{}}
}

func (c *countingImporter) Import(ctx context.Context, req *connectrelay.ImportRequest) error {
	c.mu.Lock()
	c.calls[req.S3Key]++
	c.mu.Unlock()
	return c.next.Import(ctx, req)
}

func (c *countingImporter) count(s3Key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[s3Key]
}

// eventJSON builds an AMP event body for the test tenant.
func eventJSON(typ migration.EventType, transferID string, fields map[string]any) []byte {
	body := map[string]any{
		"eventType":   string(typ),
		"cloudAppKey": "com.example.app",
		"transferId":  transferID,
		"migrationDetails": map[string]any{
			"migrationId":         "mig-" + transferID,
			"migrationScopeId":    "scope-1",
			"name":                "Test migration",
			"createdAt":           1702530783417,
			"jiraClientKey":       tenant,
			"confluenceClientKey": "unknown",
			"cloudUrl":            "https://example.atlassian.net",
		},
	}
	for k, v := range fields {
		body[k] = v
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return b
}

func mustEvent(t *testing.T, typ migration.EventType, transferID string, fields map[string]any) migration.Event {
	t.Helper()
	ev, err := migration.ParseEvent(eventJSON(typ, transferID, fields))
	if err != nil {
		t.Fatalf("ParseEvent: %v", err)
	}
	return ev
}

func uploadEvent(t *testing.T, transferID, s3Key, label string) migration.Event {
	t.Helper()
	return mustEvent(t, migration.EventAppDataUploaded, transferID, map[string]any{"s3Key": s3Key, "label": label})
}

func handle(t *testing.T, ctx context.Context, m *migration.Machine, ev migration.Event) {
	t.Helper()
	if err := m.HandleEvent(ctx, tenant, ev); err != nil {
		t.Fatalf("HandleEvent(%s): %v", ev.Type, err)
	}
}

func uploadStates(t *testing.T, ctx context.Context, m *migration.Machine, transferID string) map[string]migration.UploadState {
	t.Helper()
	us, err := m.Uploads(ctx, transferID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]migration.UploadState{}
	for _, u := range us {
		got[u.S3Key] = u.State
	}
	return got
}

func transfer(t *testing.T, ctx context.Context, m *migration.Machine, transferID string) connectrelay.Transfer {
	t.Helper()
	tr, err := m.Transfer(ctx, tenant, transferID)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// bundle is one test's fixture: a fresh database, a fake product, the recording
// importer (wrapped to count calls) and a queue scheduler.
type bundle struct {
	pool  *pgxpool.Pool
	amp   *fakeAMP
	rec   *migration.RecordingImporter
	count *countingImporter
	queue *queueScheduler
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool := newPool(t)
	rec := migration.NewRecordingImporter(pool)
	return &bundle{pool: pool, amp: newFakeAMP(), rec: rec, count: newCounting(rec), queue: &queueScheduler{}}
}

func (b *bundle) machine(t *testing.T, imp connectrelay.Importer, sched migration.Scheduler, opts migration.Options) *migration.Machine {
	t.Helper()
	if imp == nil {
		imp = b.count
	}
	if sched == nil {
		sched = b.queue
	}
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	m, err := migration.NewMachine(b.pool, b.amp, imp, sched, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
