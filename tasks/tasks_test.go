package tasks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/product"
)

func TestRetryDelay_GrowsExponentiallyWithJitterAndACap(t *testing.T) {
	for n := 0; n < 30; n++ {
		want := time.Hour
		if n < 20 {
			want = min(2*time.Second<<n, time.Hour)
		}
		for range 20 {
			d := RetryDelay(n, errors.New("boom"), nil)
			if d < want/2 || d > want {
				t.Fatalf("RetryDelay(%d) = %s, want within [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func TestRetryDelay_HonoursRetryLaterAndProductRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"retry later", &RetryLater{After: 90 * time.Second, Err: errors.New("busy")}, 90 * time.Second},
		{"product Retry-After", fmt.Errorf("license: %w", &product.RetryLaterError{After: 5 * time.Minute, Err: product.ErrRateLimited}), 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := RetryDelay(0, tt.err, nil); d != tt.want {
				t.Errorf("RetryDelay = %s, want %s", d, tt.want)
			}
		})
	}
}

func TestIsFailure_ExcludesDeliberateRetries(t *testing.T) {
	if IsFailure(fmt.Errorf("wrapped: %w", &RetryLater{After: time.Second, Err: errors.New("x")})) {
		t.Error("a RetryLater counted as a failure")
	}
	if !IsFailure(errors.New("boom")) {
		t.Error("a plain error did not count as a failure")
	}
}

func TestPermanent_ArchivesOnlyWhatNoRetryCanFix(t *testing.T) {
	tests := []struct {
		name string
		err  error
		skip bool
	}{
		{"tenant gone", fmt.Errorf("load: %w", tenant.ErrNotFound), true},
		{"product 401", &product.StatusError{Method: "GET", Route: "/x", StatusCode: http.StatusUnauthorized}, true},
		{"product 403", &product.StatusError{Method: "GET", Route: "/x", StatusCode: http.StatusForbidden}, true},
		{"product 404", &product.StatusError{Method: "GET", Route: "/x", StatusCode: http.StatusNotFound}, true},
		{"product 400", &product.StatusError{Method: "GET", Route: "/x", StatusCode: http.StatusBadRequest}, true},
		{"host not allowed", fmt.Errorf("x: %w", product.ErrHostNotAllowed), true},
		{"product 503", &product.StatusError{Method: "GET", Route: "/x", StatusCode: http.StatusServiceUnavailable}, false},
		{"network", fmt.Errorf("x: %w", product.ErrUnavailable), false},
		{"store down", fmt.Errorf("x: %w", tenant.ErrUnavailable), false},
		{"invalid event", fmt.Errorf("x: %w", migration.ErrInvalidEvent), true},
		{"transfer of another tenant", fmt.Errorf("x: %w", migration.ErrTenantMismatch), true},
		{"upload parked", fmt.Errorf("x: %w", migration.ErrTransferNotReady), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := permanent(tt.err)
			if errors.Is(got, asynq.SkipRetry) != tt.skip {
				t.Errorf("permanent(%v) skip retry = %v, want %v", tt.err, !tt.skip, tt.skip)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("permanent lost the cause: %v", got)
			}
		})
	}
}

func TestEnqueuer_RecognisesRedeliveriesByTaskID(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	client := asynq.NewClientFromRedisClient(rdb)
	e := NewEnqueuer(client)
	ctx := context.Background()
	steps := []struct {
		name string
		do   func() (bool, error)
		dup  bool
	}{
		{"first init", func() (bool, error) { return e.Lifecycle(ctx, TypeTenantInit, "ck-1", 7) }, false},
		{"same init again", func() (bool, error) { return e.Lifecycle(ctx, TypeTenantInit, "ck-1", 7) }, true},
		{"next history event", func() (bool, error) { return e.Lifecycle(ctx, TypeTenantInit, "ck-1", 8) }, false},
		{"first migration event", func() (bool, error) { return e.MigrationEvent(ctx, "ck-1", "msg:m1", []byte(`{}`)) }, false},
		{"re-sent migration event", func() (bool, error) { return e.MigrationEvent(ctx, "ck-1", "msg:m1", []byte(`{}`)) }, true},
		{"import", func() (bool, error) {
			return e.enqueueImport(ctx, migration.UploadRef{ClientKey: "ck-1", TransferID: "t", S3Key: "k"})
		}, false},
		{"import again", func() (bool, error) {
			return e.enqueueImport(ctx, migration.UploadRef{ClientKey: "ck-1", TransferID: "t", S3Key: "k"})
		}, true},
		{"import rescheduled after its task was lost", func() (bool, error) {
			return e.enqueueImport(ctx, migration.UploadRef{ClientKey: "ck-1", TransferID: "t", S3Key: "k", Reschedule: 1})
		}, false},
	}
	for _, s := range steps {
		dup, err := s.do()
		if err != nil || dup != s.dup {
			t.Errorf("%s: duplicate=%v err=%v, want duplicate=%v", s.name, dup, err, s.dup)
		}
	}
	if _, err := e.Lifecycle(ctx, "tenant:bogus", "ck-1", 1); err == nil {
		t.Error("unknown lifecycle type accepted")
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(QueueLifecycle)
	if err != nil || info.Pending != 2 {
		t.Errorf("lifecycle queue pending = %v (%v), want 2", info, err)
	}
}

func TestEnqueuer_RedisDownIsUnavailableWithinASecond(t *testing.T) {
	t.Parallel()
	rdb, err := OpenRedis("redis://" + testenv.ClosedAddr(t) + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	e := NewEnqueuer(asynq.NewClientFromRedisClient(rdb))
	for i := range 3 { // the first call and the later (EVALSHA) path fail alike
		ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		start := time.Now()
		_, err := e.Lifecycle(ctx, TypeTenantInit, "ck-1", int64(i))
		cancel()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("call %d: err = %v, want ErrUnavailable", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("call %d took %s", i, d)
		}
	}
}

func TestPermanent_AResultReportedDuringTheHandOverIsRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err       error
		skipRetry bool
	}{
		{fmt.Errorf("result: %w", migration.ErrUploadHandingOver), false},
		{fmt.Errorf("result: %w", migration.ErrUploadNotPending), true},
	} {
		if got := errors.Is(permanent(tc.err), asynq.SkipRetry); got != tc.skipRetry {
			t.Errorf("permanent(%v) skips retries = %v, want %v", tc.err, got, tc.skipRetry)
		}
	}
}
