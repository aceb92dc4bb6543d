package lifecycle

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay"
	"github.com/connectrelay/connectrelay/internal/outbox"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// A worker without listeners acknowledges every delivery without reading
// the feed; with one, it reads the feed, so a Postgres it cannot reach is an
// error to retry, never a delivery skipped.
func TestDeliver_ReadsTheFeedOnlyWithAListener(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@" + testenv.ClosedAddr(t) + "/postgres?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	unreachable := outbox.NewStore(pool)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"no listener", Config{Events: unreachable}, false},
		{"a lifecycle listener", Config{Events: unreachable, Listener: nopListener{}}, true},
		{"a migration listener", Config{Events: unreachable, MigrationListener: nopListener{}}, true},
	}
	for _, tc := range tests {
		s := &Service{cfg: tc.cfg, log: slog.New(slog.DiscardHandler), now: time.Now}
		if err := s.Deliver(ctx, 1); (err != nil) != tc.wantErr {
			t.Errorf("%s: Deliver = %v, want an error: %v", tc.name, err, tc.wantErr)
		}
	}
}

type nopListener struct{}

func (nopListener) TenantLifecycle(context.Context, *connectrelay.LifecycleEvent) error { return nil }
func (nopListener) TransferEvent(context.Context, *connectrelay.TransferEvent) error    { return nil }
