package service_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/handlers"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/service"
)

// A real primary, a replica and three Sentinels on loopback: the primary dies
// under traffic, the receiver answers 503 during the switch and 200 after it
// without a restart, and every event it acknowledged is processed by the worker.
func TestSentinel_PrimaryDiesUnderTrafficLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	const master = "relay"
	primary := testenv.StartRedis(t)
	pport := primary.Addr[strings.LastIndex(primary.Addr, ":")+1:]
	replica := testenv.StartRedis(t, "--replicaof", "127.0.0.1", pport)
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rc.Close()
	eventually(t, 15*time.Second, "the replica in sync", func() bool {
		info, _ := rc.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, testenv.StartSentinel(t, master, primary.Addr, 2).Addr)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0]})
	defer sc.Close()
	eventually(t, 20*time.Second, "the Sentinels know the replica", func() bool {
		reps, err := sc.Replicas(context.Background(), master).Result()
		return err == nil && len(reps) == 1
	})

	e := newE2EWith(t, "", func(c *config.Config) {
		c.RedisURL = "redis-sentinel://" + strings.Join(sentinels, ",") + "/0?master=" + master
	})
	e.startWorker(service.WorkerOptions{})
	const secret = "shared-secret-sentinel-e2e-0123456789"
	e.install("ck-sen", newProduct(t, secret, newSite()), secret)

	var (
		mu    sync.Mutex
		acked []string
		codes = map[int]int{}
	)
	send := func(i int) int {
		id := fmt.Sprintf("m-%04d", i)
		code := e.hs256(handlers.PathMigrationEvents, "ck-sen", secret, map[string]any{"eventType": "transfer-paused", "messageId": id})
		mu.Lock()
		defer mu.Unlock()
		codes[code]++
		if code == http.StatusOK {
			acked = append(acked, id)
		}
		return code
	}
	i := 0
	for ; i < 20; i++ {
		if code := send(i); code != http.StatusOK {
			t.Fatalf("before the failover: event %d = %d", i, code)
		}
	}
	// The primary crashes; the Sentinels see it down after a second and promote
	// the replica. (A manual SENTINEL FAILOVER is not what this tests: the old
	// primary keeps accepting writes until it is reconfigured, and Redis
	// replication being asynchronous, what it took then is dropped when it
	// resyncs. See the README on min-replicas-to-write.)
	primary.Kill()
	// Traffic through the switch, until the former replica is the primary and
	// 20 more events in a row are acknowledged.
	rport := replica.Addr[strings.LastIndex(replica.Addr, ":")+1:]
	switched := func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), master).Result()
		return err == nil && addr[1] == rport
	}
	deadline := time.Now().Add(60 * time.Second)
	inARow := 0
	for inARow < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("no 20 acknowledged events in a row after the switch within 60 s: answers %v", codes)
		}
		if send(i) != http.StatusOK {
			inARow = 0
			time.Sleep(20 * time.Millisecond)
		} else if switched() {
			inARow++
		}
		i++
	}
	mu.Lock()
	for code, n := range codes {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("%d answers %d during the failover: only 200 and 503 are allowed", n, code)
		}
	}
	want := append([]string(nil), acked...)
	mu.Unlock()
	t.Logf("answers through the failover: %v", codes)
	processed := func() []string {
		rows, err := e.pool.Query(context.Background(), `SELECT DISTINCT message_id FROM migration_events WHERE message_id = ANY($1)`, want)
		if err != nil {
			return nil
		}
		ids, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		return ids
	}
	deadline = time.Now().Add(60 * time.Second)
	for len(processed()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := processed(); len(got) != len(want) {
		var missing []string
		for _, id := range want {
			if !slices.Contains(got, id) {
				missing = append(missing, id)
			}
		}
		for _, a := range []string{primary.Addr, replica.Addr} {
			c := redis.NewClient(&redis.Options{Addr: a})
			role, _ := c.Do(context.Background(), "ROLE").Slice()
			n, _ := c.LLen(context.Background(), "asynq:{migration}:pending").Result()
			_ = c.Close()
			t.Logf("%s: role %v, %d pending migration tasks", a, role[0], n)
		}
		t.Fatalf("%d of %d acknowledged events processed; missing %d from %s", len(got), len(want), len(missing), missing[0])
	}
}
