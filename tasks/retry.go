package tasks

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/lifecycle"
	"github.com/connectrelay/connectrelay/internal/migration"
	"github.com/connectrelay/connectrelay/internal/tenant"
	"github.com/connectrelay/connectrelay/product"
)

// RetryLater is returned by handlers that want to run again after a given delay
// without counting as a failure (a transfer another worker holds, a dedupe key
// another worker is processing). RetryDelay honours the delay; IsFailure
// excludes it from failure counts.
type RetryLater struct {
	After time.Duration
	Err   error
}

// Error says when the task runs again and why.
func (e *RetryLater) Error() string { return fmt.Sprintf("retry in %s: %v", e.After, e.Err) }

// Unwrap returns the reason.
func (e *RetryLater) Unwrap() error { return e.Err }

// IsFailure tells asynq whether an error counts as a failure (it always retries
// non-nil errors): a deliberate RetryLater does not.
func IsFailure(err error) bool {
	var rl *RetryLater
	return !errors.As(err, &rl)
}

// RetryDelay is exponential backoff with jitter: base 2 s doubling per attempt,
// capped at 1 h, each delay drawn from 50-100 % of that; a product's Retry-After
// or a RetryLater delay is honoured when longer. MaxRetry attempts of this span
// about two days before the task is archived.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	const base, ceiling = 2 * time.Second, time.Hour
	d := ceiling
	if n < 20 {
		d = min(base<<n, ceiling)
	}
	// Half fixed, half random: never zero, and retries of a batch spread out.
	d = d/2 + rand.N(d/2+1)
	var rl *RetryLater
	if errors.As(err, &rl) && rl.After > d {
		d = rl.After
	}
	if ra, ok := product.RetryAfter(err); ok && ra > d {
		d = ra
	}
	return d
}

// permanent marks errors that no retry can fix, so that asynq archives the task
// at once with a clear error instead of retrying for days; operators re-run it
// from the monitoring UI once the cause is fixed. Errors of the vendor's hooks
// are left to retry: the vendor's code decided, not the product.
func permanent(err error) error {
	var hook *lifecycle.HookError
	switch {
	case err == nil, errors.Is(err, asynq.SkipRetry), errors.As(err, &hook):
		return err
	case product.Final(err),
		errors.Is(err, tenant.ErrNotFound),
		errors.Is(err, migration.ErrInvalidEvent),
		errors.Is(err, migration.ErrTenantMismatch),
		errors.Is(err, migration.ErrUploadNotFound),
		errors.Is(err, migration.ErrTransferNotReady),
		errors.Is(err, migration.ErrUploadNotPending),
		errors.Is(err, connectrelay.ErrImportFailed):
		return fmt.Errorf("%w (not retried: %w)", err, asynq.SkipRetry)
	default:
		return err
	}
}
