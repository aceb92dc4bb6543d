package tasks

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func TestQueueStats_OneWorkerCollectsDepthAgeAndLiveWorkers(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range 3 {
		if _, err := client.Enqueue(asynq.NewTask("test:stats", nil), asynq.Queue(QueueMigration), asynq.TaskID("p"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest pending task has waited a minute.
	if err := rdb.HSet(ctx, queueKey(QueueMigration, "t:p0"), "pending_since", time.Now().Add(-time.Minute).UnixNano()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(asynq.NewTask("test:stats", nil), asynq.Queue(QueueEvents), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(asynq.NewTask("test:stats", nil), asynq.Queue(QueueLifecycle), asynq.TaskID("a1")); err != nil {
		t.Fatal(err)
	}
	if err := asynq.NewInspectorFromRedisClient(rdb).ArchiveTask(QueueLifecycle, "a1"); err != nil {
		t.Fatal(err)
	}
	// One live worker process (on another queue, so it runs none of these).
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{"elsewhere": 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.NewServeMux()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	time.Sleep(200 * time.Millisecond) // its first heartbeat

	ma, mb := metrics.New(), metrics.New()
	a := NewQueueStats(rdb, ma, "worker-a", nil, nil)
	b := NewQueueStats(rdb, mb, "worker-b", nil, nil)
	if ok, err := a.Collect(ctx, time.Second); err != nil || !ok {
		t.Fatalf("a: collected %v, %v", ok, err)
	}
	if ok, err := b.Collect(ctx, time.Second); err != nil || ok {
		t.Fatalf("b: collected %v, %v; want only one collector", ok, err)
	}
	want := map[[2]string]float64{
		{QueueMigration, "pending"}: 3, {QueueEvents, "scheduled"}: 1, {QueueLifecycle, "archived"}: 1,
		{QueueLifecycle, "pending"}: 0, {QueueMaintenance, "retry"}: 0,
	}
	for k, v := range want {
		if got := testutil.ToFloat64(ma.QueueTasks.WithLabelValues(k[0], k[1])); got != v {
			t.Errorf("queue %s %s = %v, want %v", k[0], k[1], got, v)
		}
	}
	if age := testutil.ToFloat64(ma.QueueOldestPending.WithLabelValues(QueueMigration)); age < 59 || age > 120 {
		t.Errorf("oldest pending age = %v s, want about 60", age)
	}
	if n := testutil.ToFloat64(ma.WorkersLive); n != 1 {
		t.Errorf("live workers = %v, want 1", n)
	}
	if n := testutil.CollectAndCount(mb.QueueTasks); n != 0 {
		t.Errorf("the non-collector exposes %d queue series", n)
	}
	// The collector dies: its lock lapses (3 intervals) and b takes over.
	if err := rdb.Del(ctx, queueStatsLock).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Collect(ctx, time.Second); err != nil || !ok {
		t.Fatalf("b after a's lock lapsed: collected %v, %v", ok, err)
	}
	if ok, _ := a.Collect(ctx, time.Second); ok {
		t.Fatal("a collected again while b holds the lock")
	}
	if n := testutil.CollectAndCount(ma.QueueTasks); n != 0 {
		t.Errorf("the former collector still exposes %d stale series", n)
	}
}
