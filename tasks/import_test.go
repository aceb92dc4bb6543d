package tasks

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/product"
)

// runner records what the task layer asks of the migration machine; Import
// answers with importErr.
type runner struct {
	mu        sync.Mutex
	importErr error
	block     bool
	imports   int
	failed    []string
	started   chan struct{}
	pruned    []time.Duration // PruneEvents' olderThan, per call
}

func (r *runner) HandleEvent(context.Context, string, migration.Event) error { return nil }
func (r *runner) SettlePending(context.Context, int) (int, error)            { return 0, nil }
func (r *runner) RequeueStale(context.Context, time.Duration, int) (int, error) {
	return 0, nil
}
func (r *runner) ReconcileStale(context.Context, time.Duration, time.Duration, int) (int, error) {
	return 0, nil
}
func (r *runner) PruneEvents(_ context.Context, olderThan time.Duration, _ int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruned = append(r.pruned, olderThan)
	return 0, nil
}

func (r *runner) Import(ctx context.Context, ref migration.UploadRef) error {
	r.mu.Lock()
	r.imports++
	block := r.block
	r.mu.Unlock()
	if block {
		close(r.started)
		<-ctx.Done()
		return ctx.Err()
	}
	return r.importErr
}

func (r *runner) ReportResult(context.Context, migration.UploadRef, bool, string) error { return nil }

func (r *runner) FailUpload(_ context.Context, ref migration.UploadRef, _ error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, ref.S3Key)
	return nil
}

func (r *runner) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.failed...)
}

// startImportWorker runs the real task handlers on a real asynq server.
func startImportWorker(t *testing.T, r *runner) (*asynq.Client, *asynq.Server) {
	t.Helper()
	rdb := testenv.RedisClient(t)
	w, err := NewHandlers(Deps{Migration: r, Enqueuer: NewEnqueuer(asynq.NewClientFromRedisClient(rdb)), Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: Queues, TaskCheckInterval: 20 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond,
		LogLevel: asynq.FatalLevel, RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	if err := srv.Start(w.Mux()); err != nil {
		t.Fatal(err)
	}
	return asynq.NewClientFromRedisClient(rdb), srv
}

func enqueueImport(t *testing.T, c *asynq.Client, s3Key string, maxRetry int) {
	t.Helper()
	task, _ := newTask(TypeMigrationImport, migration.UploadRef{ClientKey: "ck", TransferID: "tr", S3Key: s3Key})
	if _, err := c.Enqueue(task, asynq.Queue(QueueMigration), asynq.MaxRetry(maxRetry)); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestImportTask_FailsTheUploadOnlyOnItsLastAttempt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		maxRetry int
		fail     bool
	}{
		{"transient error with retries left", errors.New("product: 503"), 5, false},
		{"transient error on the last attempt", errors.New("product: 503"), 0, true},
		{"permanent error with retries left", &product.StatusError{Method: "GET", Route: "/data", StatusCode: 404}, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &runner{importErr: tt.err}
			c, srv := startImportWorker(t, r)
			defer srv.Shutdown()
			enqueueImport(t, c, "k1", tt.maxRetry)
			waitFor(t, "the attempt", func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				return r.imports == 1
			})
			time.Sleep(200 * time.Millisecond) // let the handler finish its bookkeeping
			if got := len(r.failures()) == 1; got != tt.fail {
				t.Errorf("FailUpload called = %v, want %v", got, tt.fail)
			}
		})
	}
}

func TestImportTask_ShutdownOnTheLastAttemptDoesNotFailTheUpload(t *testing.T) {
	t.Parallel()
	r := &runner{block: true, started: make(chan struct{})}
	c, srv := startImportWorker(t, r)
	enqueueImport(t, c, "k1", 0) // the only attempt
	select {
	case <-r.started:
	case <-time.After(5 * time.Second):
		t.Fatal("import never started")
	}
	srv.Shutdown() // asynq requeues the task, then cancels the handler
	time.Sleep(100 * time.Millisecond)
	if f := r.failures(); len(f) != 0 {
		t.Errorf("upload failed on shutdown: %v", f)
	}
}
