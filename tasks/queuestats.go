package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/internal/metrics"
)

// QueueStatsInterval is how often the collecting worker refreshes the queue
// gauges.
const QueueStatsInterval = 15 * time.Second

// queueStatsLock is the Redis key naming the worker that collects.
const queueStatsLock = "connectrelay:queue-stats:collector"

// QueueStats collects the queue and fleet gauges of metrics.Metrics: tasks per
// queue and state, the oldest pending task's age, live workers. asynq's own
// queue statistics scan every task and block Redis on big queues (asynq issue
// 1160), and collecting at scrape time would run them per scrape and per
// worker; this runs O(1) commands per queue (LLEN, ZCARD, one LINDEX and HGET),
// in one worker at a time (a Redis lock it renews while it lives), at a bounded
// interval. The other workers expose no queue gauges, so max() across workers
// reads the collector's.
type QueueStats struct {
	rdb    redis.UniversalClient
	m      *metrics.Metrics
	queues []string
	id     string
	now    func() time.Time
	log    *slog.Logger
}

// NewQueueStats returns a collector for the worker's queues; id names this
// worker in the lock (unique per process).
func NewQueueStats(rdb redis.UniversalClient, m *metrics.Metrics, id string, now func() time.Time, log *slog.Logger) *QueueStats {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &QueueStats{rdb: rdb, m: m, queues: NewOrphans(rdb, 0, nil, log).queues, id: id, now: now, log: log}
}

// lockScript takes or renews the collector lock: KEYS lock; ARGV id, ttl ms.
var lockScript = redis.NewScript(`
local holder = redis.call("GET", KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0
`)

// Collect refreshes the gauges if this worker is (or becomes) the collector,
// and clears them otherwise. It reports whether it collected.
func (q *QueueStats) Collect(ctx context.Context, interval time.Duration) (bool, error) {
	held, err := lockScript.Run(ctx, q.rdb, []string{queueStatsLock}, q.id, (3 * interval).Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("queue stats: collector lock: %w", err)
	}
	if held != 1 {
		q.m.QueueTasks.Reset()
		q.m.QueueOldestPending.Reset()
		q.m.WorkersLive.Set(0)
		q.m.QueueStatsCollected.Set(0)
		return false, nil
	}
	now := q.now()
	pipe := q.rdb.Pipeline()
	type counts struct {
		pending, active            *redis.IntCmd
		scheduled, retry, archived *redis.IntCmd
		oldest                     *redis.StringCmd
	}
	per := make(map[string]counts, len(q.queues))
	for _, name := range q.queues {
		per[name] = counts{
			pending: pipe.LLen(ctx, queueKey(name, "pending")), active: pipe.LLen(ctx, queueKey(name, "active")),
			scheduled: pipe.ZCard(ctx, queueKey(name, "scheduled")), retry: pipe.ZCard(ctx, queueKey(name, "retry")),
			archived: pipe.ZCard(ctx, queueKey(name, "archived")), oldest: pipe.LIndex(ctx, queueKey(name, "pending"), -1),
		}
	}
	live := pipe.ZCount(ctx, "asynq:servers", strconv.FormatInt(now.Unix(), 10), "+inf")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("queue stats: %w", err)
	}
	for name, c := range per {
		for state, v := range map[string]*redis.IntCmd{"pending": c.pending, "active": c.active, "scheduled": c.scheduled,
			"retry": c.retry, "archived": c.archived} {
			q.m.QueueTasks.WithLabelValues(name, state).Set(float64(v.Val()))
		}
		age := 0.0
		if id, err := c.oldest.Result(); err == nil && id != "" {
			since, err := q.rdb.HGet(ctx, queueKey(name, "t:"+id), "pending_since").Int64()
			if err == nil && since > 0 {
				age = max(0, now.Sub(time.Unix(0, since)).Seconds())
			}
		}
		q.m.QueueOldestPending.WithLabelValues(name).Set(age)
	}
	q.m.WorkersLive.Set(float64(live.Val()))
	q.m.QueueStatsCollected.Set(float64(now.Unix()))
	return true, nil
}

// Run collects every interval until ctx ends.
func (q *QueueStats) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		if _, err := q.Collect(cctx, interval); err != nil && ctx.Err() == nil {
			q.log.WarnContext(ctx, "queue statistics not collected", slog.String("error", err.Error()))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
