package schema

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/connectrelay/connectrelay/internal/testenv"
)

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

type appliedRow struct {
	Version   int64
	Name      string
	AppliedAt time.Time
}

func appliedRows(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []appliedRow {
	t.Helper()
	rows, err := pool.Query(ctx, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatalf("query schema_migrations: %v", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[appliedRow])
	if err != nil {
		t.Fatalf("collect schema_migrations: %v", err)
	}
	return got
}

// runConcurrently runs Migrate-like fn from n goroutines over `pools` separate pools
// and returns every error.
func runConcurrently(t *testing.T, url string, pools, perPool int, fn func(context.Context, *pgxpool.Pool) error) []error {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range pools {
		p := openPool(t, url)
		for range perPool {
			wg.Go(func() {
				if err := fn(ctx, p); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return errs
}

func TestMigrateEmbeddedConcurrentlyThenNoOp(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	ms, err := loadMigrations(embedded)
	if err != nil {
		t.Fatalf("loadMigrations(embedded): %v", err)
	}
	if len(ms) == 0 || ms[0].version != 1 {
		t.Fatalf("embedded migrations = %+v, want 0001 first", ms)
	}

	// The embedded migrations create tables without IF NOT EXISTS, so applying any of
	// them twice would make some Migrate call fail.
	if errs := runConcurrently(t, url, 3, 3, Migrate); len(errs) > 0 {
		t.Fatalf("concurrent Migrate errors: %v", errs)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	first := appliedRows(t, ctx, pool)
	var want []int64
	for _, m := range ms {
		want = append(want, m.version)
	}
	var got []int64
	for _, r := range first {
		got = append(got, r.Version)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("applied versions (-want +got):\n%s", diff)
	}
	for _, table := range []string{"tenants", "tenant_events", "tenant_links"} {
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil || !exists {
			t.Errorf("table %s exists = %v, %v; want true", table, exists, err)
		}
	}

	if err := Migrate(ctx, pool); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if diff := cmp.Diff(first, appliedRows(t, ctx, pool)); diff != "" {
		t.Errorf("second Migrate changed schema_migrations (-before +after):\n%s", diff)
	}
}

func TestMigrateAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	fsys := fstest.MapFS{
		"migrations/0001_counter.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS counter (n int NOT NULL);")},
		"migrations/0002_bump.sql":    {Data: []byte("INSERT INTO counter VALUES (1); SELECT pg_sleep(0.05);")},
	}
	errs := runConcurrently(t, url, 4, 2, func(ctx context.Context, p *pgxpool.Pool) error {
		return migrate(ctx, p, fsys)
	})
	if len(errs) > 0 {
		t.Fatalf("concurrent migrate errors: %v", errs)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM counter").Scan(&n); err != nil {
		t.Fatalf("count counter: %v", err)
	}
	if n != 1 {
		t.Errorf("0002 applied %d times, want 1", n)
	}
}

func TestMigrateNumericOrder(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	// Lexical order would run 0010 before 2; 0010 depends on 2's table.
	fsys := fstest.MapFS{
		"migrations/0010_c.sql": {Data: []byte("INSERT INTO seq (v) VALUES (10);")},
		"migrations/0001_a.sql": {Data: []byte("CREATE TABLE log1 (v int);")},
		"migrations/2_b.sql":    {Data: []byte("CREATE TABLE seq (id serial, v int); INSERT INTO seq (v) VALUES (2);")},
		"migrations/README.md":  {Data: []byte("not a migration")},
	}
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	if err := migrate(ctx, pool, fsys); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	rows, err := pool.Query(ctx, "SELECT v FROM seq ORDER BY id")
	if err != nil {
		t.Fatalf("query seq: %v", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatalf("collect seq: %v", err)
	}
	if diff := cmp.Diff([]int{2, 10}, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestMigrateFailureRollsBackAndReleasesLock(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	good := &fstest.MapFile{Data: []byte("CREATE TABLE a (v int);")}
	broken := fstest.MapFS{
		"migrations/0001_a.sql": good,
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b (v int); SELECT no_such_function();")},
		"migrations/0003_c.sql": {Data: []byte("CREATE TABLE c (v int);")},
	}
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	if err := migrate(ctx, pool, broken); err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("migrate(broken) = %v, want an error naming 0002_b.sql", err)
	}
	var got []int64
	for _, r := range appliedRows(t, ctx, pool) {
		got = append(got, r.Version)
	}
	if diff := cmp.Diff([]int64{1}, got); diff != "" {
		t.Errorf("applied after failure (-want +got):\n%s", diff)
	}
	for table, want := range map[string]bool{"a": true, "b": false, "c": false} {
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			t.Fatalf("to_regclass(%s): %v", table, err)
		}
		if exists != want {
			t.Errorf("table %s exists = %v, want %v", table, exists, want)
		}
	}

	// The lock must be free again: a fixed set applies from another pool without
	// waiting for the deadline.
	fixed := fstest.MapFS{
		"migrations/0001_a.sql": good,
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b (v int);")},
	}
	other := openPool(t, url)
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := migrate(lctx, other, fixed); err != nil {
		t.Fatalf("migrate(fixed) after failure: %v", err)
	}
	var held int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held); err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	if held != 0 {
		t.Errorf("%d advisory locks still held after Migrate returned", held)
	}
}

func TestMigrateRejectsEditedMigration(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	v1 := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (v int);")}}
	if err := migrate(ctx, pool, v1); err != nil {
		t.Fatalf("migrate v1: %v", err)
	}
	edited := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (v bigint);")}}
	if err := migrate(ctx, pool, edited); err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Errorf("migrate(edited) = %v, want a changed-after-applied error", err)
	}
}

func TestMigrateIgnoresVersionsFromNewerBinary(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresURL(t)
	ctx := ctxTimeout(t, 10*time.Second)
	pool := openPool(t, url)
	newer := fstest.MapFS{
		"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (v int);")},
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b (v int);")},
	}
	if err := migrate(ctx, pool, newer); err != nil {
		t.Fatalf("migrate newer: %v", err)
	}
	older := fstest.MapFS{"migrations/0001_a.sql": newer["migrations/0001_a.sql"]}
	if err := migrate(ctx, pool, older); err != nil {
		t.Errorf("migrate older binary: %v, want nil", err)
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	t.Parallel()
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"no underscore", fstest.MapFS{"migrations/0001.sql": sql}, "NNNN_description"},
		{"not a number", fstest.MapFS{"migrations/abc_x.sql": sql}, "not a positive integer"},
		{"zero", fstest.MapFS{"migrations/0000_x.sql": sql}, "not a positive integer"},
		{"duplicate version", fstest.MapFS{"migrations/0002_x.sql": sql, "migrations/2_y.sql": sql}, "same version 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadMigrations(tc.fsys)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadMigrations() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestOpenIsLazyAndFailsFast(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", testenv.ClosedAddr(t))
	pool, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open with Postgres down = %v, want a pool (lazy)", err)
	}
	defer pool.Close()
	start := time.Now()
	err = Ping(t.Context(), pool)
	if err == nil {
		t.Fatal("Ping of a closed port succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Ping took %v, want < 1s", d)
	}
}

func TestOpenSettings(t *testing.T) {
	t.Parallel()
	base := "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	tests := []struct {
		name           string
		url            string
		connectTimeout time.Duration
		maxConns       int32
	}{
		{"defaults", base, DefaultConnectTimeout, DefaultMaxConns},
		{"url wins", base + "&connect_timeout=2&pool_max_conns=3", 2 * time.Second, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := Open(t.Context(), tc.url)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer pool.Close()
			cfg := pool.Config()
			if cfg.ConnConfig.ConnectTimeout != tc.connectTimeout || cfg.MaxConns != tc.maxConns {
				t.Errorf("ConnectTimeout, MaxConns = %v, %d; want %v, %d",
					cfg.ConnConfig.ConnectTimeout, cfg.MaxConns, tc.connectTimeout, tc.maxConns)
			}
			if cfg.PingTimeout != DefaultPingTimeout {
				t.Errorf("PingTimeout = %v, want %v", cfg.PingTimeout, DefaultPingTimeout)
			}
		})
	}
	if _, err := Open(t.Context(), "postgres://%zz"); err == nil {
		t.Error("Open(unparseable URL) = nil error")
	}
}

func TestMigrate_RetriesWhilePostgresDoesNotAnswerAConnect(t *testing.T) {
	t.Parallel()
	dbURL := testenv.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	proxy.Freeze() // every connect times out after DefaultConnectTimeout
	u.Host = proxy.Addr()
	pool := openPool(t, u.String())

	thawAfter := 3 * DefaultConnectTimeout
	go func() {
		time.Sleep(thawAfter)
		proxy.Thaw()
	}()
	start := time.Now()
	if err := Migrate(ctxTimeout(t, 20*time.Second), pool); err != nil {
		t.Fatalf("Migrate across connect timeouts = %v, want nil once Postgres answers", err)
	}
	if d := time.Since(start); d < thawAfter {
		t.Fatalf("Migrate returned after %v, before Postgres answered (%v): the test froze nothing", d, thawAfter)
	}
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n == 0 {
		t.Fatalf("schema_migrations rows = %d, %v; want the migrations applied", n, err)
	}
}

func TestMigrate_GivesUpAfterMaxConnectAttempts(t *testing.T) {
	t.Parallel()
	pool := openPool(t, fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", testenv.ClosedAddr(t)))
	start := time.Now()
	err := Migrate(ctxTimeout(t, 30*time.Second), pool)
	var connectErr *pgconn.ConnectError
	if !errors.As(err, &connectErr) {
		t.Fatalf("Migrate against a closed port = %v, want a *pgconn.ConnectError", err)
	}
	// Refused connects come back at once, so giving up takes the pauses between
	// MaxConnectAttempts attempts, well inside the 30 s context.
	pauses := time.Duration(MaxConnectAttempts-1) * connectRetryDelay
	if d := time.Since(start); d < pauses || d > pauses+5*time.Second {
		t.Errorf("Migrate gave up after %v, want about %v", d, pauses)
	}
}
