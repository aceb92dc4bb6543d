package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/tasks"
)

// TaskTypes returns the task types --type accepts: every type this service
// enqueues.
func TaskTypes() []string {
	return []string{
		tasks.TypeTenantInit, tasks.TypeTenantEnabled, tasks.TypeEventDeliver, tasks.TypeLicenseCheck,
		tasks.TypeMigrationEvent, tasks.TypeMigrationImport, tasks.TypeMigrationResult,
		tasks.TypeLicenseSweep, tasks.TypeSettleSweep,
	}
}

// TaskSelector picks archived tasks by exactly one of its fields.
type TaskSelector struct {
	// Tenant selects the tasks whose payload names this clientKey.
	Tenant string
	// Transfer selects the tasks whose payload names this transferId.
	Transfer string
	// Type selects the tasks of one type (one of TaskTypes()).
	Type string
}

// Validate checks that exactly one field is set and Type is known; errors wrap
// ErrInvalidArgument and name the flags.
func (s TaskSelector) Validate() error {
	set := 0
	for _, v := range []string{s.Tenant, s.Transfer, s.Type} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: give exactly one of --tenant, --transfer or --type", ErrInvalidArgument)
	}
	if types := TaskTypes(); s.Type != "" && !slices.Contains(types, s.Type) {
		return fmt.Errorf("%w: --type must be one of %s, got %q", ErrInvalidArgument, strings.Join(types, ", "), s.Type)
	}
	return nil
}

// Queue is an open connection to the service's task queue (REDIS_URL).
type Queue struct {
	redis     redis.UniversalClient
	inspector *asynq.Inspector
	log       *slog.Logger
}

// OpenQueue connects to Redis at redisURL and checks within ConnectTimeout that
// it answers (errors wrap ErrUnreachable).
func OpenQueue(ctx context.Context, redisURL string, logger *slog.Logger) (*Queue, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rc, err := tasks.OpenRedis(redisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := rc.Ping(pctx).Err(); err != nil {
		_ = rc.Close()
		return nil, fmt.Errorf("redis at %s %w within %s: %w", redisHost(redisURL), ErrUnreachable, ConnectTimeout, err)
	}
	return &Queue{redis: rc, inspector: asynq.NewInspectorFromRedisClient(rc), log: logger}, nil
}

// Close closes the connection.
func (q *Queue) Close() { _ = q.redis.Close() }

func redisHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(REDIS_URL)"
	}
	return u.Host
}

// FeedLookup names the tenant and transfer of an event of the event feed, whose
// delivery task (event:deliver) carries only the event's id.
type FeedLookup func(ctx context.Context, id int64) (clientKey, transferID string, err error)

// FeedLookup reads the event feed of the database.
func (d *DB) FeedLookup(ctx context.Context, id int64) (string, string, error) {
	var ck, tr string
	err := d.pool.QueryRow(ctx, `SELECT client_key, transfer_id FROM event_outbox WHERE id = $1`, id).Scan(&ck, &tr)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil // pruned: it names nobody any more
	}
	return ck, tr, err
}

// TaskRef names one task that was run again.
type TaskRef struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
	Type  string `json:"type"`
	// LastError is the error the task was archived with.
	LastError string `json:"lastError,omitempty"`
}

// RequeueReport is what Requeue did.
type RequeueReport struct {
	// Archived is how many archived tasks were examined.
	Archived int `json:"archived"`
	// Requeued are the tasks put back in their queue.
	Requeued []TaskRef `json:"requeued"`
	// Failed are the matching tasks that could not be run again (one that was
	// deleted or run meanwhile, say), with the reason.
	Failed []TaskRef `json:"failed"`
}

// taskNames is what a task's payload names.
type taskNames struct {
	ClientKey  string `json:"clientKey"`
	TransferID string `json:"transferId"`
	ID         int64  `json:"id"`
	Event      struct {
		TransferID string `json:"transferId"`
	} `json:"event"`
}

// archivePage is how many archived tasks are listed at once.
const archivePage = 500

// Requeue runs again (moves to pending) every archived task that sel picks, in
// every queue of the service. Payloads are JSON naming clientKey and
// transferId (migration:event names the transfer in its event body);
// event:deliver tasks name only a feed event, which feed (when not nil) looks
// up. ctx bounds the feed lookups; each Redis command is bounded by the
// client's timeouts.
func (q *Queue) Requeue(ctx context.Context, sel TaskSelector, feed FeedLookup) (RequeueReport, error) {
	if err := sel.Validate(); err != nil {
		return RequeueReport{}, err
	}
	rep := RequeueReport{Requeued: []TaskRef{}, Failed: []TaskRef{}}
	queues := make([]string, 0, len(tasks.Queues))
	for name := range tasks.Queues {
		queues = append(queues, name)
	}
	sort.Strings(queues)
	for _, queue := range queues {
		var picked []*asynq.TaskInfo
		for page := 1; ; page++ {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			infos, err := q.inspector.ListArchivedTasks(queue, asynq.Page(page), asynq.PageSize(archivePage))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return rep, fmt.Errorf("list archived tasks of queue %s: %w", queue, err)
			}
			rep.Archived += len(infos)
			for _, ti := range infos {
				ok, err := matches(ctx, sel, ti, feed)
				if err != nil {
					return rep, fmt.Errorf("task %s: %w", ti.ID, err)
				}
				if ok {
					picked = append(picked, ti)
				}
			}
			if len(infos) < archivePage {
				break
			}
		}
		// Run after listing, so that the pages do not shift under the listing.
		for _, ti := range picked {
			ref := TaskRef{Queue: queue, ID: ti.ID, Type: ti.Type, LastError: ti.LastErr}
			if err := q.inspector.RunTask(queue, ti.ID); err != nil {
				ref.LastError = err.Error()
				rep.Failed = append(rep.Failed, ref)
				continue
			}
			rep.Requeued = append(rep.Requeued, ref)
		}
	}
	q.log.InfoContext(ctx, "archived tasks run again", slog.Int("requeued", len(rep.Requeued)), slog.Int("failed", len(rep.Failed)))
	return rep, nil
}

// matches reports whether sel picks the task.
func matches(ctx context.Context, sel TaskSelector, ti *asynq.TaskInfo, feed FeedLookup) (bool, error) {
	if sel.Type != "" {
		return ti.Type == sel.Type, nil
	}
	var n taskNames
	_ = json.Unmarshal(ti.Payload, &n) // a payload that is not JSON names nobody
	transfer := n.TransferID
	if transfer == "" {
		transfer = n.Event.TransferID
	}
	if ti.Type == tasks.TypeEventDeliver && n.ID > 0 && feed != nil {
		ck, tr, err := feed(ctx, n.ID)
		if err != nil {
			return false, fmt.Errorf("look up feed event %d: %w", n.ID, err)
		}
		n.ClientKey, transfer = ck, tr
	}
	if sel.Tenant != "" {
		return n.ClientKey == sel.Tenant, nil
	}
	return transfer == sel.Transfer, nil
}
