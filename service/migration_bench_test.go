package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/service"
	"github.com/connectrelay/connectrelay/tasks"
)

// The worker's ceiling on migration events: b.N listener-triggered events of
// one installed tenant, each of a transfer of its own (as bench/atlassian pace
// sends them), are enqueued while no worker runs; then one worker at the
// default concurrency (10) and pool (10) drains them. events/s is measured by
// Postgres: b.N-1 over the time between the first and the last event's
// transaction. tx/event is the committed Postgres transactions per event,
// everything the worker does for it included (the transfer.ready delivery).
// On a shared machine events/s moves with the neighbours' load; the CPU
// spent per event (worker-ms/event: this process, the worker's Postgres
// backends, and Redis; Linux only) moves much less.
// Compare against the same benchmark on another commit in the same session:
//
//	go test -run='^$' -bench=WorkerMigrationEvents -benchtime=3000x -count=3 ./service/
//
// BENCH_WORKER_CONCURRENCY and BENCH_POOL_MAX_CONNS, when set, replace the
// defaults, to see how the ceiling moves with them.
func BenchmarkWorkerMigrationEvents(b *testing.B) {
	e := newE2EWith(b, "", func(c *config.Config) {
		c.WorkerConcurrency = 10
		if n, err := strconv.Atoi(os.Getenv("BENCH_WORKER_CONCURRENCY")); err == nil {
			c.WorkerConcurrency = n
		}
		if v := os.Getenv("BENCH_POOL_MAX_CONNS"); v != "" {
			c.DatabaseURL += "&pool_max_conns=" + v
		}
		c.LogLevel = "info"
	})
	// The production worker logs JSON at LOG_LEVEL (info); encoding is kept.
	logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	stop := e.startWorker(service.WorkerOptions{Logger: logger})
	const secret = "shared-secret-migration-bench-0123456789"
	e.install("ck-bench", newProduct(b, secret, newSite()), secret)
	eventually(b, 20*time.Second, "the install's events delivered", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM event_outbox WHERE dispatched_at IS NULL`).Scan(&n)
		return n == 0
	})
	stop()

	ctx := context.Background()
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	enq := tasks.NewEnqueuer(client)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += 8 {
				id := fmt.Sprintf("bench-%d", i)
				body := fmt.Sprintf(`{"eventType":"listener-triggered","transferId":"tr-%s","messageId":"%s","migrationDetails":{"migrationId":"mig-bench","jiraClientKey":"ck-bench","confluenceClientKey":"unknown"}}`, id, id)
				if _, err := enq.MigrationEvent(ctx, "ck-bench", "msg:"+id, []byte(body)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		b.Fatal(errs[0])
	}
	var commits0 int64
	if err := e.pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&commits0); err != nil {
		b.Fatal(err)
	}

	cpu0 := cpuTimes(b, e)
	b.ResetTimer()
	e.startWorker(service.WorkerOptions{Logger: logger})
	handled := func() int {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM migration_events WHERE outcome = 'handled'`).Scan(&n)
		return n
	}
	eventually(b, 5*time.Minute, fmt.Sprintf("%d events handled", b.N), func() bool { return handled() >= b.N })
	b.StopTimer()
	cpu1 := cpuTimes(b, e)
	eventually(b, 20*time.Second, "the transfer events delivered", func() bool {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM event_outbox WHERE dispatched_at IS NULL`).Scan(&n)
		return n == 0
	})
	time.Sleep(500 * time.Millisecond) // the last deliveries' transactions
	var (
		secs     float64
		commits1 int64
	)
	if err := e.pool.QueryRow(ctx, `SELECT extract(epoch FROM max(handled_at) - min(handled_at))::float8
		FROM migration_events WHERE outcome = 'handled'`).Scan(&secs); err != nil {
		b.Fatal(err)
	}
	// pg_stat_database lags by up to a stats flush; it is an estimate.
	if err := e.pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&commits1); err != nil {
		b.Fatal(err)
	}
	if secs > 0 {
		b.ReportMetric(float64(b.N-1)/secs, "events/s")
	}
	b.ReportMetric(float64(commits1-commits0)/float64(b.N), "tx/event")
	if cpu0.ok && cpu1.ok {
		per := func(a, z time.Duration) float64 { return float64(z-a) / float64(time.Millisecond) / float64(b.N) }
		b.ReportMetric(per(cpu0.self, cpu1.self), "worker-ms/event")
		b.ReportMetric(per(cpu0.postgres, cpu1.postgres), "postgres-ms/event")
		b.ReportMetric(per(cpu0.redis, cpu1.redis), "redis-ms/event")
	}
}

// The floor under BenchmarkWorkerMigrationEvents: asynq alone, b.N tasks
// enqueued as migration events are (queue, TaskID, retention, retries) and
// run by a no-op handler on one server configured as the worker's. Each
// migration event costs two such tasks (the event, its transfer.ready
// delivery), so half of tasks/s bounds events/s whatever the handlers do.
//
//	go test -run='^$' -bench=AsynqNoop -benchtime=6000x ./service/
func BenchmarkWorkerMigrationEvents_Floor_AsynqNoop(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.RedisClient(b)
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range b.N {
		if _, err := client.Enqueue(asynq.NewTask("bench:noop", []byte(`{}`)), asynq.Queue(tasks.QueueMigration),
			asynq.TaskID(fmt.Sprint("noop-", i)), asynq.Retention(tasks.MigrationRetention), asynq.MaxRetry(tasks.MaxRetry)); err != nil {
			b.Fatal(err)
		}
	}
	redisPID, err := redisProcessID(ctx, rdb)
	if err != nil {
		b.Fatal(err)
	}
	self0, err1 := procCPU(os.Getpid())
	redis0, err2 := procCPU(redisPID)
	var n, first, last atomic.Int64
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 10, Queues: tasks.Queues, StrictPriority: true, TaskCheckInterval: 20 * time.Millisecond,
		LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error {
		first.CompareAndSwap(0, time.Now().UnixNano())
		if n.Add(1) == int64(b.N) {
			last.Store(time.Now().UnixNano())
		}
		return nil
	})
	b.ResetTimer()
	if err := srv.Start(mux); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	deadline := time.Now().Add(5 * time.Minute)
	for last.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d tasks run in 5 minutes", n.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	self1, err3 := procCPU(os.Getpid())
	redis1, err4 := procCPU(redisPID)
	if secs := float64(last.Load()-first.Load()) / 1e9; secs > 0 {
		b.ReportMetric(float64(b.N-1)/secs, "tasks/s")
	}
	if errors.Join(err1, err2, err3, err4) == nil {
		b.ReportMetric(float64(self1-self0)/float64(time.Millisecond)/float64(b.N), "worker-ms/task")
		b.ReportMetric(float64(redis1-redis0)/float64(time.Millisecond)/float64(b.N), "redis-ms/task")
	}
}

// redisProcessID is the pid of the Redis server rdb talks to.
func redisProcessID(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info: %w", err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("redis info: no process_id")
}

// cpuUse is the CPU time used so far by this process, by the Postgres
// backends of its database and by Redis; ok is false where /proc cannot tell.
type cpuUse struct {
	self, postgres, redis time.Duration
	ok                    bool
}

func cpuTimes(b *testing.B, e *e2e) cpuUse {
	ctx := context.Background()
	var u cpuUse
	self, err := procCPU(os.Getpid())
	if err != nil {
		return u
	}
	// The worker's connections stay open while it drains; the pids are read
	// again each time, so a connection opened in between is counted from 0.
	rows, err := e.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	for _, pid := range pids {
		if d, err := procCPU(int(pid)); err == nil {
			u.postgres += d
		}
	}
	rdb, err := tasks.OpenRedis(e.cfg.RedisURL)
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	redisPID, err := redisProcessID(ctx, rdb)
	if err != nil {
		b.Fatal(err)
	}
	if u.redis, err = procCPU(redisPID); err != nil {
		return u
	}
	u.self, u.ok = self, true
	return u
}

// procCPU is the user and system CPU time of process pid so far, from
// /proc/pid/stat (in clock ticks of 1/100 s).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, errors.New("read cpu time: short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
