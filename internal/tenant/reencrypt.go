package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
)

// maxReencryptPasses bounds how many times Reencrypt goes over the table: a pass
// finds rows a writer still on an older key sealed during the previous one.
const maxReencryptPasses = 5

// ReencryptReport is what a Reencrypt run did. It never holds a secret.
type ReencryptReport struct {
	// Total is the number of tenants when the run ended.
	Total int `json:"total"`
	// Reencrypted is how many secrets this run re-sealed with the primary key.
	Reencrypted int `json:"reencrypted"`
	// Current is how many tenants' secrets are sealed with the primary key when
	// the run ended (those re-sealed by it included).
	Current int `json:"current"`
	// Raced is how many rows were rewritten by a concurrent write (an install)
	// between reading and re-sealing them; they were read again.
	Raced int `json:"raced"`
	// Undecryptable are the clientKeys whose secret none of the box's keys
	// opens; they are left as they are.
	Undecryptable []string `json:"undecryptable"`
	// PrimaryKeyID is the id of the key the secrets are sealed with now.
	PrimaryKeyID string `json:"primaryKeyId"`
}

// ReencryptSecrets is Reencrypt returning only how many secrets it re-sealed.
func (s *Store) ReencryptSecrets(ctx context.Context, batch int) (int, error) {
	rep, err := s.Reencrypt(ctx, batch)
	return rep.Reencrypted, err
}

// Reencrypt re-seals, with the box's primary key, every stored secret sealed with
// another key, reading batch rows at a time (batch <= 0 means 100). It is the
// second step of a key rotation (see SecretBox) and is safe while the service
// runs: each row is re-sealed by a compare-and-set on its sealed value, so a
// secret rotated by a concurrent install is never overwritten with the one read
// before it (the row is read again), and a row locked by another writer is
// waited for, not skipped. Running it again is harmless: rows already under the
// primary key are not touched. Rows that cannot be decrypted are left as they
// are and reported, after all others are done, in an error wrapping ErrDecrypt;
// other errors wrap ErrUnavailable when Postgres cannot answer.
func (s *Store) Reencrypt(ctx context.Context, batch int) (ReencryptReport, error) {
	if batch <= 0 {
		batch = 100
	}
	rep := ReencryptReport{Undecryptable: []string{}, PrimaryKeyID: s.box.PrimaryKeyID()}
	for pass := 0; pass < maxReencryptPasses; pass++ {
		n, err := s.reencryptPass(ctx, batch, &rep)
		if err != nil {
			return rep, storeErr(err, "re-encrypt secrets")
		}
		if n == 0 {
			break
		}
	}
	if err := s.countSealed(ctx, &rep); err != nil {
		return rep, storeErr(err, "re-encrypt secrets: count")
	}
	if len(rep.Undecryptable) > 0 {
		s.log.ErrorContext(ctx, "shared secrets left undecryptable by re-encryption", slog.Any("client_keys", rep.Undecryptable))
		return rep, fmt.Errorf("re-encrypt secrets: %d tenant(s) %s: %w",
			len(rep.Undecryptable), strings.Join(rep.Undecryptable, ", "), ErrDecrypt)
	}
	return rep, nil
}

// sealedRow is one tenant's sealed secret as read.
type sealedRow struct {
	clientKey string
	sealed    Sealed
}

// reencryptPass goes once over the rows not sealed with the primary key, in
// clientKey order, and returns how many it re-sealed.
func (s *Store) reencryptPass(ctx context.Context, batch int, rep *ReencryptReport) (int, error) {
	done, after := 0, ""
	for {
		rows, err := s.oldSealed(ctx, after, batch, rep.Undecryptable)
		if err != nil {
			return done, err
		}
		if len(rows) == 0 {
			return done, nil
		}
		for _, r := range rows {
			ok, err := s.reseal(ctx, r, rep)
			if err != nil {
				return done, err
			}
			if ok {
				done++
			}
		}
		after = rows[len(rows)-1].clientKey
	}
}

// oldSealed reads up to batch rows after clientKey after that are not sealed with
// the primary key, leaving out the clientKeys in skip. It takes no lock.
func (s *Store) oldSealed(ctx context.Context, after string, batch int, skip []string) ([]sealedRow, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT client_key, secret_key_id, secret_nonce, secret_ciphertext
		FROM tenants WHERE secret_key_id <> $1 AND client_key > $2 AND NOT client_key = ANY($3)
		ORDER BY client_key LIMIT $4`, s.box.PrimaryKeyID(), after, skip, batch)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealedRow, error) {
		var x sealedRow
		err := r.Scan(&x.clientKey, &x.sealed.KeyID, &x.sealed.Nonce, &x.sealed.Ciphertext)
		return x, err
	})
}

// reseal re-seals one row with the primary key, compare-and-set on the sealed
// value read; when a concurrent write changed it, the row is read again. It
// reports whether this call re-sealed the row.
func (s *Store) reseal(ctx context.Context, r sealedRow, rep *ReencryptReport) (bool, error) {
	for {
		if r.sealed.KeyID == s.box.PrimaryKeyID() {
			return false, nil // a concurrent write sealed it with the primary key
		}
		secret, err := s.box.Open(r.clientKey, r.sealed)
		if err != nil {
			rep.Undecryptable = append(rep.Undecryptable, r.clientKey)
			return false, nil
		}
		sealed, err := s.box.Seal(r.clientKey, secret)
		clear(secret)
		if err != nil {
			return false, err
		}
		swapped, err := s.swapSealed(ctx, r, sealed)
		if err != nil || swapped {
			if swapped {
				rep.Reencrypted++
			}
			return swapped, err
		}
		rep.Raced++
		if r, err = s.readSealed(ctx, r.clientKey); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return false, nil
			}
			return false, err
		}
	}
}

// swapSealed writes next over r's sealed secret if the row still holds exactly
// r's. The UPDATE waits for a row lock another writer holds.
func (s *Store) swapSealed(ctx context.Context, r sealedRow, next Sealed) (bool, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET secret_key_id = $5, secret_nonce = $6, secret_ciphertext = $7,
		updated_at = now()
		WHERE client_key = $1 AND secret_key_id = $2 AND secret_nonce = $3 AND secret_ciphertext = $4`,
		r.clientKey, r.sealed.KeyID, r.sealed.Nonce, r.sealed.Ciphertext, next.KeyID, next.Nonce, next.Ciphertext)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// readSealed reads one row's sealed secret.
func (s *Store) readSealed(ctx context.Context, clientKey string) (sealedRow, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	x := sealedRow{clientKey: clientKey}
	err := s.pool.QueryRow(ctx, `SELECT secret_key_id, secret_nonce, secret_ciphertext FROM tenants WHERE client_key = $1`,
		clientKey).Scan(&x.sealed.KeyID, &x.sealed.Nonce, &x.sealed.Ciphertext)
	return x, err
}

// countSealed fills rep's Total and Current.
func (s *Store) countSealed(ctx context.Context, rep *ReencryptReport) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	return s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE secret_key_id = $1) FROM tenants`,
		s.box.PrimaryKeyID()).Scan(&rep.Total, &rep.Current)
}
