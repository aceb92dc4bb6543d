package migration

import (
	"context"
	"errors"
	"fmt"
)

// SettlePending makes the settle calls still owed (the transfer reached a final
// state but the product did not accept the settle call, and every task that could
// have retried it is used up), at most limit of them, oldest first. It reports how
// many were attempted; failures are recorded on each transfer and joined into err.
// The worker runs it periodically so a transfer is never left open at the product
// because of a transient outage.
func (m *Machine) SettlePending(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := m.pool.Query(ctx, `SELECT transfer_id FROM migration_transfers
		WHERE settle_status IS NOT NULL AND settled_at IS NULL ORDER BY updated_at LIMIT $1`, limit)
	if err != nil {
		return 0, fmt.Errorf("migration: list transfers owed a settle call: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("migration: list transfers owed a settle call: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("migration: list transfers owed a settle call: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := m.settle(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return len(ids), errors.Join(errs...)
}
