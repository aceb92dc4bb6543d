package ops

import (
	"context"
	"errors"

	"github.com/connectrelay/connectrelay/internal/tenant"
)

// ErrNoKey means re-encryption was asked for without CONNECT_SECRET_KEY.
var ErrNoKey = errors.New("CONNECT_SECRET_KEY is required to re-encrypt (the new key; the old ones in CONNECT_SECRET_KEY_PREVIOUS)")

// Reencrypt re-seals every stored secret with the primary key of the box the DB
// was opened with (tenant.Store.Reencrypt: idempotent, safe while the service
// runs). The report holds counts and clientKeys, never a secret; an
// undecryptable secret is reported in it and in an error wrapping
// tenant.ErrDecrypt.
func (d *DB) Reencrypt(ctx context.Context, batch int) (tenant.ReencryptReport, error) {
	if !d.hasBox {
		return tenant.ReencryptReport{}, ErrNoKey
	}
	return d.tenants.Reencrypt(ctx, batch)
}
