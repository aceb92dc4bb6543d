package ops

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StaleMinAge is how long ago the descriptor change must have been published
// before the missed-uninstall report means anything: Atlassian re-sends
// installed to every installed tenant over the day after a change.
const StaleMinAge = 24 * time.Hour

// ErrTooRecent means the time given to the missed-uninstall report is not more
// than StaleMinAge ago.
var ErrTooRecent = errors.New("is not more than 24 h ago")

// StaleReport is the missed-uninstall report.
type StaleReport struct {
	Since time.Time `json:"since"`
	// Count is how many installed tenants sent no installed since Since.
	Count int `json:"count"`
	// Tenants are up to the limit of them, in clientKey order.
	Tenants []TenantView `json:"tenants"`
}

// CheckStaleSince checks that since is more than StaleMinAge before now. Errors
// wrap ErrTooRecent and ErrInvalidArgument.
func CheckStaleSince(since, now time.Time) error {
	if now.Sub(since) <= StaleMinAge {
		return fmt.Errorf("%w: --since %s %w (now %s): tenants are still re-sending installed; run it after %s",
			ErrInvalidArgument, since.UTC().Format(time.RFC3339), ErrTooRecent, now.UTC().Format(time.RFC3339),
			since.Add(StaleMinAge).UTC().Format(time.RFC3339))
	}
	return nil
}

// Stale lists the installed tenants that sent no installed since since (after a
// descriptor change published then, they have probably uninstalled without the
// hook reaching this service). It flags, never deletes or changes anything.
// limit <= 0 means 1000.
func (d *DB) Stale(ctx context.Context, since time.Time, limit int) (StaleReport, error) {
	if err := CheckStaleSince(since, d.now()); err != nil {
		return StaleReport{}, err
	}
	if limit <= 0 {
		limit = 1000
	}
	n, err := d.tenants.CountStale(ctx, since)
	if err != nil {
		return StaleReport{}, err
	}
	ts, err := d.tenants.Stale(ctx, since, limit)
	if err != nil {
		return StaleReport{}, err
	}
	rep := StaleReport{Since: since.UTC(), Count: n, Tenants: make([]TenantView, 0, len(ts))}
	for _, t := range ts {
		rep.Tenants = append(rep.Tenants, viewOf(t))
	}
	return rep, nil
}
