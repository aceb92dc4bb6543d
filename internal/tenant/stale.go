package tenant

import (
	"context"
	"time"

	"github.com/connectrelay/connectrelay"
)

// staleWhere selects the installed tenants that received no installed (applied or
// not) at or after $1: after a descriptor change published at $1, every installed
// tenant is sent installed again, so one that never was has probably been
// uninstalled without its uninstalled reaching this service.
const staleWhere = `installed AND last_installed_at < $1 AND NOT EXISTS (
	SELECT 1 FROM tenant_events e WHERE e.client_key = tenants.client_key AND e.type = 'installed' AND e.at >= $1)`

// Stale returns, in clientKey order, up to limit (<= 0 means 100, at most 1000)
// installed tenants that received no installed at or after since: the
// missed-uninstall report. It only reads; nothing is flagged or deleted here.
// Errors wrap ErrUnavailable.
func (s *Store) Stale(ctx context.Context, since time.Time, limit int) ([]connectrelay.Tenant, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	ctx, cancel := bound(ctx)
	defer cancel()
	ts, err := s.queryTenants(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE `+staleWhere+`
		ORDER BY client_key LIMIT $2`, since, limit)
	if err != nil {
		return nil, storeErr(err, "stale tenants")
	}
	return ts, nil
}

// CountStale counts the tenants Stale selects, without a limit. Errors wrap
// ErrUnavailable.
func (s *Store) CountStale(ctx context.Context, since time.Time) (int, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE `+staleWhere, since).Scan(&n); err != nil {
		return 0, storeErr(err, "count stale tenants")
	}
	return n, nil
}
