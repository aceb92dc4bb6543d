package service

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/testenv"
)

// Pickup latency of an idle worker: from enqueue to the handler starting, with
// this service's polling interval against asynq's default (1 s) as the baseline
// measured in the same run.
//
//	go test -run='^$' -bench=Pickup -benchtime=20x ./service/
func BenchmarkWorkerPickup_Baseline_AsynqDefault(b *testing.B) {
	benchPickup(b, 0)
}

func BenchmarkWorkerPickup_Configured(b *testing.B) {
	benchPickup(b, taskCheckInterval)
}

func benchPickup(b *testing.B, interval time.Duration) {
	rdb := testenv.RedisClient(b)
	started := make(chan time.Time, 1)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{"bench": 1}, TaskCheckInterval: interval, LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench", func(context.Context, *asynq.Task) error {
		started <- time.Now()
		return nil
	})
	if err := srv.Start(mux); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(rdb)
	// Let the processor reach its idle wait before measuring.
	time.Sleep(2 * time.Second)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		at := time.Now()
		if _, err := client.Enqueue(asynq.NewTask("bench", nil), asynq.Queue("bench")); err != nil {
			b.Fatal(err)
		}
		total += (<-started).Sub(at)
		// Idle again, as a worker between real callbacks is; the varying extra
		// wait keeps the enqueues from locking into phase with the polling.
		time.Sleep(interval + time.Duration(int64(total)%int64(50*time.Millisecond)))
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/pickup")
}
