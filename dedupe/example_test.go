package dedupe_test

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/dedupe"
)

// The worker-side pattern: claim, run, mark done; release on failure; acknowledge
// a key that is already done; retry one that another worker holds.
func ExampleStore_Claim() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	store := dedupe.New(rdb, dedupe.Options{})
	handle := func(ctx context.Context, key string, run func(context.Context) error) error {
		claim, err := store.Claim(ctx, key)
		switch {
		case errors.Is(err, dedupe.ErrAlreadyDone):
			return nil // a re-delivery of completed work: acknowledge
		case err != nil:
			return err // ErrInProgress or Redis down: retry the task later
		}
		if err := run(ctx); err != nil {
			_ = claim.Release(ctx) // let the retry claim at once
			return err
		}
		if err := claim.Done(ctx); err != nil && !errors.Is(err, dedupe.ErrClaimLost) {
			return err // the work is done but not remembered: a retry re-runs it (idempotent)
		}
		return nil
	}
	_ = handle
}
