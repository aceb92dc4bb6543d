package tasks

import (
	"testing"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay/internal/metrics"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

func TestSettleSweep_PrunesMigrationEventsPastTheirRetention(t *testing.T) {
	t.Parallel()
	r := &runner{}
	h, err := NewHandlers(Deps{Migration: r, Enqueuer: NewEnqueuer(asynq.NewClientFromRedisClient(testenv.RedisClient(t))), Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	task, _ := SettleSweepTask()
	if err := h.settleSweep(t.Context(), task); err != nil {
		t.Fatalf("settle sweep: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pruned) != 1 || r.pruned[0] != migration.DefaultEventRetention {
		t.Errorf("PruneEvents calls %v, want one with %s", r.pruned, migration.DefaultEventRetention)
	}
}
