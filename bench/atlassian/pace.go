package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pace sends listener-triggered events of tenant ck-0 at a fixed rate (open
// loop: one every 1/rate, whatever the answers take, as wrk2 would) for a
// bounded duration, and measures for each, from the receiver's 2xx, how long
// until the worker's effect is visible in Postgres: its migration_events row
// marked handled. It prints "events/s non-2xx p50 p99 missing" on stdout.
func pace(args []string) error {
	fs := flag.NewFlagSet("pace", flag.ContinueOnError)
	c := commonFlags(fs)
	target := fs.String("url", "http://127.0.0.1:18091", "receiver base URL to send to")
	dbURL := fs.String("db", "", "Postgres URL of the receiver's and worker's database")
	rate := fs.Int("rate", 200, "events per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	settle := fs.Duration("settle", 15*time.Second, "how long to wait after the last event for the effects")
	prefix := fs.String("prefix", "pace", "messageId prefix, distinct per run")
	poll := fs.Duration("poll", 2*time.Millisecond, "how often Postgres is polled for effects")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	if *rate <= 0 || *rate > 5000 {
		return fmt.Errorf("rate %d outside 1..5000", *rate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration+*settle+10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, *dbURL)
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	defer pool.Close()
	s := signer{appKey: *c.appKey, appBase: *c.appBase}
	tok, err := s.token("/migration/events", "ck-0", []byte(secretOf("ck-0")), time.Now(), 0)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	var (
		mu      sync.Mutex
		acked   = map[string]time.Time{} // messageId -> 2xx, until its effect is seen
		effects []time.Duration
		non2xx  int
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 512)
	)
	send := func(id string) {
		defer wg.Done()
		defer func() { <-sem }()
		body := fmt.Sprintf(`{"eventType":"listener-triggered","transferId":"tr-%s","messageId":"%s","migrationDetails":{"migrationId":"mig-pace","jiraClientKey":"ck-0","confluenceClientKey":"unknown"}}`, id, id)
		code, err := post(ctx, client, *target+"/migration/events", signed{token: tok, body: []byte(body)})
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if err != nil || code/100 != 2 {
			non2xx++
			return
		}
		acked[id] = now
	}

	// The poller: which acknowledged events has the worker handled?
	pollDone := make(chan struct{})
	sendingDone := make(chan struct{})
	var pollErr error
	go func() {
		defer close(pollDone)
		t := time.NewTicker(*poll)
		defer t.Stop()
		for {
			mu.Lock()
			pending := make([]string, 0, len(acked))
			for id := range acked {
				pending = append(pending, id)
			}
			mu.Unlock()
			select {
			case <-sendingDone:
				if len(pending) == 0 {
					return
				}
			default:
			}
			if len(pending) > 0 {
				rows, err := pool.Query(ctx, `SELECT message_id FROM migration_events WHERE message_id = ANY($1) AND handled_at IS NOT NULL`, pending)
				if err != nil {
					pollErr = err
					return
				}
				seen := time.Now()
				var done []string
				for rows.Next() {
					var id string
					if err := rows.Scan(&id); err == nil {
						done = append(done, id)
					}
				}
				rows.Close()
				mu.Lock()
				for _, id := range done {
					if at, ok := acked[id]; ok {
						effects = append(effects, seen.Sub(at))
						delete(acked, id)
					}
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	total := int(duration.Seconds() * float64(*rate))
	late := 0
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			late++ // 512 requests in flight: the receiver is not keeping up
			sem <- struct{}{}
		}
		wg.Add(1)
		go send(fmt.Sprintf("%s-%d", *prefix, i))
	}
	wg.Wait()
	sent := time.Since(start)
	close(sendingDone)
	select {
	case <-pollDone:
	case <-time.After(*settle):
	}
	cancel()
	<-pollDone
	if pollErr != nil && ctx.Err() == nil {
		return fmt.Errorf("poll postgres: %w", pollErr)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(effects)
	pct := func(p float64) string {
		if len(effects) == 0 {
			return "-"
		}
		return fmtLatency(effects[min(len(effects)-1, int(p*float64(len(effects))))])
	}
	if late > 0 {
		fmt.Fprintf(os.Stderr, "pace: %d sends waited for one of 512 requests in flight\n", late)
	}
	fmt.Printf("%.1f %d %s %s %d\n", float64(total)/sent.Seconds(), non2xx, pct(0.50), pct(0.99), len(acked))
	return nil
}
