package tenant

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/connectrelay/connectrelay/product"
)

var _ product.TargetSource = (*Store)(nil)

// Target returns what an outbound call to clientKey's product needs: its current
// baseUrl and decrypted shared secret, read in one query on every call, so that a
// rename or a secret rotation stored by an installed callback takes effect at
// once. It implements product.TargetSource. Errors wrap ErrNotFound,
// ErrUnavailable or ErrDecrypt.
func (s *Store) Target(ctx context.Context, clientKey string) (product.Target, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var (
		baseURL string
		sealed  Sealed
	)
	err := s.pool.QueryRow(ctx, `SELECT base_url, secret_key_id, secret_nonce, secret_ciphertext
		FROM tenants WHERE client_key = $1`, clientKey).Scan(&baseURL, &sealed.KeyID, &sealed.Nonce, &sealed.Ciphertext)
	if errors.Is(err, pgx.ErrNoRows) {
		return product.Target{}, fmt.Errorf("tenant %s: %w", clientKey, ErrNotFound)
	}
	if err != nil {
		return product.Target{}, storeErr(err, "tenant %s", clientKey)
	}
	secret, err := s.open(ctx, clientKey, sealed)
	if err != nil {
		return product.Target{}, err
	}
	return product.Target{ClientKey: clientKey, BaseURL: baseURL, Secret: secret}, nil
}
