package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// OrphanGrace is how long a task may sit in a queue's active list without a
// lease before it is requeued: asynq's lease duration, so that a task whose
// lease is being written is never taken for an orphan.
const OrphanGrace = 30 * time.Second

// OrphanSweepInterval is how often each worker looks for orphaned tasks and
// expired leases.
const OrphanSweepInterval = 5 * time.Second

// MaxFastRecoveries is how many times Sweep requeues one task whose lease
// expired. Requeuing it does not count an attempt (asynq keeps the count in
// its encoded task), so a task that kills the worker running it is then left
// to asynq's own recoverer, which counts it and archives it in the end.
const MaxFastRecoveries = 3

// recoveredTTL is how long the count of a task's fast recoveries is kept.
const recoveredTTL = 24 * time.Hour

// Orphans requeues tasks orphaned in asynq's active state: after a Redis
// failover or an eviction a task can stay in a queue's active list with no
// lease (asynq issues 1051 and 1144), and asynq's own recoverer, which only
// looks at expired leases, never runs it again. A task seen active with no
// lease is remembered; one still in that state OrphanGrace later is moved back
// to pending, in one script per task so a worker that takes it meanwhile wins.
//
// It also requeues a task whose lease expired, the mark of a worker killed
// while running it: asynq v0.26 takes such a task back only 30 s after its
// lease expired and looks once a minute, so a killed worker's tasks waited one
// to two minutes; a live worker extends its leases (30 s) every few seconds,
// so an expired lease means its worker stopped at least 25 s ago. Each task is
// requeued this way at most MaxFastRecoveries times.
//
// It reads asynq's key layout (v0.26: asynq:{queue}:active, :lease, :pending,
// :t:<id>); the test of this file creates the orphaned state with those keys, so
// an upgrade that changes them fails there first. Every key of one queue shares
// the queue's hash tag, so the script runs on a Redis Cluster too.
type Orphans struct {
	rdb    redis.UniversalClient
	queues []string
	grace  time.Duration
	now    func() time.Time
	log    *slog.Logger
}

// NewOrphans returns an Orphans over the worker's queues. grace defaults to
// OrphanGrace and now to time.Now.
func NewOrphans(rdb redis.UniversalClient, grace time.Duration, now func() time.Time, log *slog.Logger) *Orphans {
	if grace <= 0 {
		grace = OrphanGrace
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	qs := make([]string, 0, len(Queues))
	for q := range Queues {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	return &Orphans{rdb: rdb, queues: qs, grace: grace, now: now, log: log}
}

// orphanScript: KEYS active, lease, pending, task hash, orphans hash; ARGV id,
// now ms, grace ms, now ns. Returns 0 not orphaned, 1 orphaned (remembered), 2
// requeued, 3 dropped (its task hash is gone).
var orphanScript = redis.NewScript(`
if redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  redis.call("HDEL", KEYS[5], ARGV[1])
  return 0
end
if not redis.call("LPOS", KEYS[1], ARGV[1]) then
  redis.call("HDEL", KEYS[5], ARGV[1])
  return 0
end
local first = redis.call("HGET", KEYS[5], ARGV[1])
if not first then
  redis.call("HSET", KEYS[5], ARGV[1], ARGV[2])
  return 1
end
if tonumber(ARGV[2]) - tonumber(first) < tonumber(ARGV[3]) then
  return 1
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("HDEL", KEYS[5], ARGV[1])
if redis.call("EXISTS", KEYS[4]) == 0 then
  return 3
end
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending", "pending_since", ARGV[4])
return 2
`)

// expiredScript: KEYS active, lease, pending, task hash, recovered counter;
// ARGV id, now s, max recoveries, counter ttl s, now ns. Returns 0 not
// expired (or no longer active), 2 requeued, 3 dropped (its task hash is
// gone), 4 left to asynq's recoverer (recovered too often; 5 when that was
// said before).
var expiredScript = redis.NewScript(`
local lease = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not lease or tonumber(lease) >= tonumber(ARGV[2]) then
  return 0
end
if not redis.call("LPOS", KEYS[1], ARGV[1]) then
  return 0
end
if redis.call("EXISTS", KEYS[4]) == 0 then
  redis.call("LREM", KEYS[1], 0, ARGV[1])
  redis.call("ZREM", KEYS[2], ARGV[1])
  return 3
end
local n = redis.call("INCR", KEYS[5])
redis.call("EXPIRE", KEYS[5], ARGV[4])
if n == tonumber(ARGV[3]) + 1 then
  return 4
end
if n > tonumber(ARGV[3]) then
  return 5
end
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending", "pending_since", ARGV[5])
return 2
`)

// recoveredKey counts a task's fast recoveries, under the queue's hash tag.
func recoveredKey(q, id string) string { return "connectrelay:recovered:{" + q + "}:" + id }

func queueKey(q, suffix string) string { return "asynq:{" + q + "}:" + suffix }

// orphansKey is where first sightings are remembered, under the queue's hash tag.
func orphansKey(q string) string { return "connectrelay:orphans:{" + q + "}" }

// Sweep looks at every queue once and returns how many tasks it requeued.
func (o *Orphans) Sweep(ctx context.Context) (int, error) {
	requeued := 0
	for _, q := range o.queues {
		n, err := o.expired(ctx, q)
		requeued += n
		if err != nil {
			return requeued, err
		}
		ids, err := o.rdb.LRange(ctx, queueKey(q, "active"), 0, -1).Result()
		if err != nil {
			return requeued, fmt.Errorf("orphans: active tasks of %s: %w", q, err)
		}
		now := o.now()
		for _, id := range ids {
			res, err := orphanScript.Run(ctx, o.rdb, []string{queueKey(q, "active"), queueKey(q, "lease"),
				queueKey(q, "pending"), queueKey(q, "t:"+id), orphansKey(q)},
				id, now.UnixMilli(), o.grace.Milliseconds(), now.UnixNano()).Int()
			if err != nil {
				return requeued, fmt.Errorf("orphans: task %s of %s: %w", id, q, err)
			}
			switch res {
			case 2:
				requeued++
				o.log.WarnContext(ctx, "task was active without a lease; requeued", slog.String("queue", q), slog.String("task_id", id))
			case 3:
				o.log.WarnContext(ctx, "task was active without a lease or a body; dropped from active", slog.String("queue", q), slog.String("task_id", id))
			}
		}
		// Forget sightings of tasks that left the active list.
		seen, err := o.rdb.HKeys(ctx, orphansKey(q)).Result()
		if err != nil {
			return requeued, fmt.Errorf("orphans: sightings of %s: %w", q, err)
		}
		var gone []string
		for _, id := range seen {
			if !slices.Contains(ids, id) {
				gone = append(gone, id)
			}
		}
		if len(gone) > 0 {
			if err := o.rdb.HDel(ctx, orphansKey(q), gone...).Err(); err != nil {
				return requeued, fmt.Errorf("orphans: forget sightings of %s: %w", q, err)
			}
		}
	}
	return requeued, nil
}

// expired requeues the tasks of q whose lease expired.
func (o *Orphans) expired(ctx context.Context, q string) (int, error) {
	now := o.now()
	ids, err := o.rdb.ZRangeByScore(ctx, queueKey(q, "lease"), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(now.Unix(), 10), Count: 1000}).Result()
	if err != nil {
		return 0, fmt.Errorf("orphans: expired leases of %s: %w", q, err)
	}
	requeued := 0
	for _, id := range ids {
		res, err := expiredScript.Run(ctx, o.rdb, []string{queueKey(q, "active"), queueKey(q, "lease"),
			queueKey(q, "pending"), queueKey(q, "t:"+id), recoveredKey(q, id)},
			id, now.Unix(), MaxFastRecoveries, int(recoveredTTL.Seconds()), now.UnixNano()).Int()
		if err != nil {
			return requeued, fmt.Errorf("orphans: expired task %s of %s: %w", id, q, err)
		}
		switch res {
		case 2:
			requeued++
			o.log.WarnContext(ctx, "task's lease expired (its worker stopped); requeued", slog.String("queue", q), slog.String("task_id", id))
		case 3:
			o.log.WarnContext(ctx, "task's lease expired and its body is gone; dropped from active", slog.String("queue", q), slog.String("task_id", id))
		case 4:
			o.log.WarnContext(ctx, "task's lease expired again; left to asynq's recoverer, which counts the attempt",
				slog.String("queue", q), slog.String("task_id", id), slog.Int("fast_recoveries", MaxFastRecoveries))
		}
	}
	return requeued, nil
}

// Run sweeps every interval until ctx ends.
func (o *Orphans) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := o.Sweep(sctx); err != nil && ctx.Err() == nil {
			o.log.WarnContext(ctx, "orphaned task sweep failed", slog.String("error", err.Error()))
		}
		cancel()
	}
}
