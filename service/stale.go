package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/connectrelay/connectrelay/internal/ops"
)

// staleSweepInterval is how often each worker counts the missed uninstalls
// for connectrelay_stale_tenants: the count moves slowly (tenants re-send
// installed over the day after a descriptor change), and it is one indexed
// query.
const staleSweepInterval = 10 * time.Minute

// staleCountTimeout bounds one count.
const staleCountTimeout = 30 * time.Second

// staleSweep keeps connectrelay_stale_tenants up to date until ctx ends: every
// worker counts, at start and then every staleSweepInterval, the installed
// tenants that sent no installed since STALE_SINCE, so that each one's
// /metrics agrees whichever is scraped. Nothing is computed at scrape time,
// nor before STALE_SINCE is more than 24 h ago (the gauge has no series until
// then), nor when STALE_SINCE is unset.
func (w *Worker) staleSweep(ctx context.Context) {
	since := w.cfg.StaleSince
	if since.IsZero() {
		return
	}
	interval := staleSweepInterval
	if d := w.test.StaleInterval; d > 0 {
		interval = d
	}
	label := since.UTC().Format(time.RFC3339)
	waiting := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := ops.CheckStaleSince(since, time.Now()); err != nil {
			if !waiting {
				w.log.InfoContext(ctx, "stale tenant count starts once STALE_SINCE is more than 24 h ago",
					slog.Time("stale_since", since), slog.Time("starts_at", since.Add(ops.StaleMinAge)))
				waiting = true
			}
		} else {
			cctx, cancel := context.WithTimeout(ctx, staleCountTimeout)
			n, err := w.stores.tenants.CountStale(cctx, since)
			cancel()
			if err != nil && ctx.Err() == nil {
				w.log.WarnContext(ctx, "stale tenant count failed; the gauge keeps its last value", slog.String("error", err.Error()))
			} else if err == nil {
				// The series is made here, on the first count, not before.
				w.test.Metrics.StaleTenants.WithLabelValues(label).Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
