package tenant

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrTokenReused means a lifecycle token already recorded with one body came
// again with another: a replay of a captured token (a Connect JWT's qsh does
// not cover the body). Nothing changed; the HTTP layer answers 401.
var ErrTokenReused = errors.New("lifecycle token already used with another body")

// Delivery is one delivery of a lifecycle event: when it was received, the iat
// of its JWT, and the token and body it came with.
//
// The store binds Token to Body in the history row of the event, in the
// transaction of the change it makes. A later delivery of the same token with
// the same body is a copy: it changes nothing and is answered with the first
// delivery's history row (its EventID), so whatever follows the change (the
// enqueue of the tenant's task) can be done again; the same token with another
// body fails with ErrTokenReused. A Delivery without a Token (an operator's or a
// test's call) binds nothing.
type Delivery struct {
	// At is when the event was received.
	At time.Time
	// IssuedAt is the JWT iat; zero means At.
	IssuedAt time.Time
	// Token is the raw JWT. Only its SHA-256 is stored.
	Token string
	// Body is the request body. Only its SHA-256 is stored.
	Body []byte
}

// ReceivedAt returns a Delivery at at, issued at iat, binding no token.
func ReceivedAt(at, iat time.Time) Delivery { return Delivery{At: at, IssuedAt: iat} }

// iat is the delivery's iat, At when it has none.
func (d Delivery) iat() time.Time {
	if d.IssuedAt.IsZero() {
		return d.At
	}
	return d.IssuedAt
}

// binding is what a history row stores of a delivery: nil digests for one
// without a token.
type binding struct {
	token, body []byte
}

func (d Delivery) binding() binding {
	if d.Token == "" {
		return binding{}
	}
	t, b := sha256.Sum256([]byte(d.Token)), sha256.Sum256(d.Body)
	return binding{token: t[:], body: b[:]}
}

// recorded is what the history says of a delivery's token: whether a row
// holds it, and that row's id and whether it came with the same body for the
// same tenant.
type recorded struct {
	found, same bool
	eventID     int64
}

// queueLookup queues the read of the history row holding b's token, if any,
// into r. It must run after the tenant's row lock is taken: a concurrent copy
// of the same delivery then waits for the first and finds its row.
func (b binding) queueLookup(batch *pgx.Batch, clientKey string, r *recorded) {
	if b.token == nil {
		return
	}
	batch.Queue(`SELECT id, body_sha256 = $2 AND client_key = $3 FROM tenant_events WHERE token_sha256 = $1`,
		b.token, b.body, clientKey).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&r.eventID, &r.same)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("look up the token's history row: %w", err)
		}
		r.found = true
		return nil
	})
}

// verdict is nil for a delivery whose token the history does not hold yet,
// and ErrTokenReused for one it holds with another body or tenant.
func (r recorded) verdict() error {
	if r.found && !r.same {
		return ErrTokenReused
	}
	return nil
}
