package tasks

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/internal/testenv"
)

// orphan moves the oldest pending task of q to active the way asynq's dequeue
// does, but with a lease only when withLease: the state a failover or eviction
// leaves behind (asynq issues 1051, 1144).
var orphan = redis.NewScript(`
local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[2])
redis.call("HSET", ARGV[1] .. id, "state", "active")
redis.call("HDEL", ARGV[1] .. id, "pending_since")
if ARGV[2] == "1" then redis.call("ZADD", KEYS[3], ARGV[3], id) end
return id
`)

func makeActive(t *testing.T, rdb redis.UniversalClient, q string, withLease bool) string {
	t.Helper()
	if !withLease {
		return makeActiveUntil(t, rdb, q, time.Time{})
	}
	return makeActiveUntil(t, rdb, q, time.Now().Add(time.Hour))
}

// makeActiveUntil is makeActive with a lease expiring at until (none when
// zero).
func makeActiveUntil(t *testing.T, rdb redis.UniversalClient, q string, until time.Time) string {
	t.Helper()
	lease := "0"
	if !until.IsZero() {
		lease = "1"
	}
	id, err := orphan.Run(context.Background(), rdb, []string{queueKey(q, "pending"), queueKey(q, "active"), queueKey(q, "lease")},
		queueKey(q, "t:"), lease, until.Unix()).Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestOrphans_RequeuesAnActiveTaskWithoutALeaseAfterTheGrace(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	for _, id := range []string{"orphaned", "leased"} {
		if _, err := client.Enqueue(asynq.NewTask("test:orphan", []byte(id)), asynq.Queue(QueueLifecycle), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	// Both leave pending oldest first: "orphaned" without a lease, "leased"
	// with a live one (a worker is running it).
	if id := makeActive(t, rdb, QueueLifecycle, false); id != "orphaned" {
		t.Fatalf("made %s active", id)
	}
	makeActive(t, rdb, QueueLifecycle, true)
	// A stray id with no task behind it.
	if err := rdb.LPush(ctx, queueKey(QueueLifecycle, "active"), "ghost").Err(); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	o := NewOrphans(rdb, 30*time.Second, func() time.Time { return now }, nil)
	if n, err := o.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("first sighting: requeued %d, %v; want 0 (within the grace)", n, err)
	}
	now = now.Add(29 * time.Second)
	if n, err := o.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("29 s later: requeued %d, %v; want 0", n, err)
	}
	now = now.Add(2 * time.Second)
	if n, err := o.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("after the grace: requeued %d, %v; want 1", n, err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for id, want := range map[string]asynq.TaskState{"orphaned": asynq.TaskStatePending, "leased": asynq.TaskStateActive} {
		info, err := insp.GetTaskInfo(QueueLifecycle, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != want {
			t.Errorf("%s: state %s, want %s", id, info.State, want)
		}
	}
	active, _ := rdb.LRange(ctx, queueKey(QueueLifecycle, "active"), 0, -1).Result()
	if len(active) != 1 || active[0] != "leased" {
		t.Errorf("active list %v, want only the leased task", active)
	}
	if n, _ := rdb.HLen(ctx, orphansKey(QueueLifecycle)).Result(); n != 0 {
		t.Errorf("%d sightings left behind", n)
	}

	// A worker now runs the requeued task.
	ran := make(chan string, 2)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{QueueLifecycle: 1}, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 50 * time.Millisecond})
	mux := asynq.NewServeMux()
	mux.HandleFunc("test:orphan", func(_ context.Context, t *asynq.Task) error { ran <- string(t.Payload()); return nil })
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case id := <-ran:
		if id != "orphaned" {
			t.Fatalf("ran %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the requeued task never ran")
	}
}

// A worker killed mid-task leaves its task active with a lease nobody
// extends: once the lease has expired the sweep requeues it (asynq itself
// waits another 30 s and looks once a minute), at most MaxFastRecoveries
// times, and never touches a task whose lease is alive.
func TestOrphans_RequeuesATaskWhoseLeaseExpired(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, id := range []string{"killed", "alive"} {
		if _, err := client.Enqueue(asynq.NewTask("test:lease", []byte(id)), asynq.Queue(QueueMigration), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if id := makeActiveUntil(t, rdb, QueueMigration, now.Add(-2*time.Second)); id != "killed" {
		t.Fatalf("made %s active", id)
	}
	makeActiveUntil(t, rdb, QueueMigration, now.Add(25*time.Second))
	o := NewOrphans(rdb, 0, func() time.Time { return now }, nil)
	state := func(id string) asynq.TaskState {
		t.Helper()
		info, err := insp.GetTaskInfo(QueueMigration, id)
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	for i := 1; i <= MaxFastRecoveries+1; i++ {
		n, err := o.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		if i > MaxFastRecoveries {
			want = 0
		}
		if n != want || state("alive") != asynq.TaskStateActive {
			t.Fatalf("sweep %d: requeued %d (want %d); alive is %s", i, n, want, state("alive"))
		}
		if want == 1 {
			if state("killed") != asynq.TaskStatePending {
				t.Fatalf("sweep %d: killed is %s, want pending", i, state("killed"))
			}
			if _, err := rdb.ZScore(ctx, queueKey(QueueMigration, "lease"), "killed").Result(); err != redis.Nil {
				t.Fatalf("sweep %d: the expired lease is still there (%v)", i, err)
			}
			// A worker takes it again and is killed again.
			if id := makeActiveUntil(t, rdb, QueueMigration, now.Add(-time.Second)); id != "killed" {
				t.Fatalf("made %s active", id)
			}
		}
	}
	if state("killed") != asynq.TaskStateActive {
		t.Errorf("after %d fast recoveries the task is %s, want it left active for asynq's recoverer", MaxFastRecoveries, state("killed"))
	}
}
