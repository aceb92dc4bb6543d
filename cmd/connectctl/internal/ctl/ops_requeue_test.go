package ctl

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/tasks"
)

// archived puts a task in the archive of its queue, as asynq does with a task
// whose retries are exhausted.
func archived(t *testing.T, rc *redis.Client, queue, typ, id string, payload any) {
	t.Helper()
	var b []byte
	if payload != nil {
		var err error
		if b, err = json.Marshal(payload); err != nil {
			t.Fatal(err)
		}
	}
	client := asynq.NewClientFromRedisClient(rc)
	if _, err := client.Enqueue(asynq.NewTask(typ, b), asynq.Queue(queue), asynq.TaskID(id)); err != nil {
		t.Fatalf("enqueue %s: %v", id, err)
	}
	if err := asynq.NewInspectorFromRedisClient(rc).ArchiveTask(queue, id); err != nil {
		t.Fatalf("archive %s: %v", id, err)
	}
}

func TestTasksRequeue_RunsArchivedTasksOfATenantATransferOrAType(t *testing.T) {
	t.Parallel()
	e := setupOps(t)
	db := testenv.Redis(t)
	e.env["REDIS_URL"] = "redis://" + testenv.RedisAddr() + "/" + itoa(db)
	rc := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), DB: db})
	t.Cleanup(func() { _ = rc.Close() })

	var feedID int64
	if err := e.pool.QueryRow(t.Context(), `INSERT INTO event_outbox (client_key, type, transfer_id) VALUES ('b', 'transfer.ready', 'tr-2')
		RETURNING id`).Scan(&feedID); err != nil {
		t.Fatal(err)
	}
	archived(t, rc, tasks.QueueLifecycle, tasks.TypeTenantInit, "init-a", tasks.TenantPayload{ClientKey: "a", EventID: 1})
	archived(t, rc, tasks.QueueMigration, tasks.TypeMigrationImport, "import-a", map[string]string{"clientKey": "a", "transferId": "tr-1", "s3Key": "s1"})
	archived(t, rc, tasks.QueueMigration, tasks.TypeMigrationEvent, "event-b",
		map[string]any{"clientKey": "b", "event": map[string]string{"eventType": "listener-triggered", "transferId": "tr-2"}})
	archived(t, rc, tasks.QueueEvents, tasks.TypeEventDeliver, "deliver-b", map[string]int64{"id": feedID})
	archived(t, rc, tasks.QueueMaintenance, tasks.TypeSettleSweep, "sweep", nil)
	archived(t, rc, tasks.QueueLifecycle, tasks.TypeTenantInit, "init-c", tasks.TenantPayload{ClientKey: "c"})

	requeue := func(args ...string) []string {
		t.Helper()
		code, out, errOut := run(t, e.env, e.now, append([]string{"tasks", "requeue", "--json"}, args...)...)
		if code != ExitOK {
			t.Fatalf("tasks requeue %v: exit %d, %s", args, code, errOut)
		}
		var ids []string
		for _, r := range decodeJSON[struct{ Requeued []struct{ ID string } }](t, out).Requeued {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := strings.Join(requeue("--tenant", "a"), ","); got != "init-a,import-a" {
		t.Errorf("--tenant a requeued %s, want init-a,import-a", got)
	}
	if got := strings.Join(requeue("--transfer", "tr-2"), ","); got != "deliver-b,event-b" {
		t.Errorf("--transfer tr-2 requeued %s, want deliver-b,event-b", got)
	}
	if got := strings.Join(requeue("--type", tasks.TypeSettleSweep), ","); got != "sweep" {
		t.Errorf("--type %s requeued %s, want sweep", tasks.TypeSettleSweep, got)
	}
	if got := requeue("--tenant", "a"); len(got) != 0 {
		t.Errorf("second --tenant a requeued %v, want nothing (they are pending now)", got)
	}
	insp := asynq.NewInspectorFromRedisClient(rc)
	for queue, id := range map[string]string{tasks.QueueLifecycle: "init-a", tasks.QueueMigration: "event-b", tasks.QueueEvents: "deliver-b",
		tasks.QueueMaintenance: "sweep"} {
		info, err := insp.GetTaskInfo(queue, id)
		if err != nil || info.State != asynq.TaskStatePending {
			t.Errorf("task %s after requeue: %v, %v; want pending", id, info, err)
		}
	}
	if info, err := insp.GetTaskInfo(tasks.QueueLifecycle, "init-c"); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("init-c (not selected) = %v, %v; want still archived", info, err)
	}
	code, text, _ := run(t, e.env, e.now, "tasks", "requeue", "--tenant", "c")
	if code != ExitOK || !strings.Contains(text, "requeued 1 of 1 archived task(s)") || !strings.Contains(text, "init-c") {
		t.Errorf("text requeue = %d\n%s", code, text)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
