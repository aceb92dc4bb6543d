package tenant

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay"

	"github.com/connectrelay/connectrelay/internal/schema"
	"github.com/connectrelay/connectrelay/internal/testenv"
)

// storeAt returns a Store whose pool points at addr, built the way the binaries build
// theirs.
func storeAt(t *testing.T, addr string) *Store {
	t.Helper()
	pool, err := schema.Open(t.Context(), fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr))
	if err != nil {
		t.Fatalf("schema.Open: %v", err)
	}
	t.Cleanup(pool.Close)
	box, err := NewSecretBox(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(pool, box, testLogger(t))
}

// blackHole listens on loopback, accepts connections and never answers: a Postgres
// that hangs instead of refusing.
func blackHole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// storeCalls are every Store operation a request path uses.
func storeCalls(s *Store) map[string]func(context.Context) error {
	p := InstallPayload{HostInfo: connectrelay.HostInfo{ClientKey: "ck", AppKey: "app", BaseURL: "https://ck.atlassian.net"}, SharedSecret: "s"}
	return map[string]func(context.Context) error{
		"Install": func(ctx context.Context) error { _, err := s.Install(ctx, p, ReceivedAt(ts(1), ts(1))); return err },
		"Uninstall": func(ctx context.Context) error {
			_, err := s.Uninstall(ctx, "ck", ReceivedAt(ts(1), ts(1)))
			return err
		},
		"SetEnabled": func(ctx context.Context) error {
			_, err := s.SetEnabled(ctx, "ck", true, ReceivedAt(ts(1), ts(1)))
			return err
		},
		"Get":          func(ctx context.Context) error { _, err := s.Get(ctx, "ck"); return err },
		"SharedSecret": func(ctx context.Context) error { _, err := s.SharedSecret(ctx, "ck"); return err },
		"cache": func(ctx context.Context) error {
			_, err := NewSecretCache(s, time.Minute).SharedSecret(ctx, "ck", false)
			return err
		},
		"History":    func(ctx context.Context) error { _, err := s.History(ctx, "ck", 10); return err },
		"Links":      func(ctx context.Context) error { _, err := s.Links(ctx, "ck"); return err },
		"ByBaseURL":  func(ctx context.Context) error { _, err := s.ByBaseURL(ctx, "https://ck.atlassian.net"); return err },
		"List":       func(ctx context.Context) error { _, err := s.List(ctx, 10, 0); return err },
		"SetLicense": func(ctx context.Context) error { return s.SetLicense(ctx, "ck", connectrelay.LicenseActive, ts(1)) },
		"SetWebhookRegistered": func(ctx context.Context) error {
			return s.SetWebhookRegistered(ctx, "ck", []string{"https://app/migration/events"}, ts(1))
		},
		"ReencryptSecrets": func(ctx context.Context) error { _, err := s.ReencryptSecrets(ctx, 10); return err },
		"RecordForge": func(ctx context.Context) error {
			c := forgeClaimsFor("ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5", "d0d52620-3203-4cfa-8db5-f2587155f0dd", "1")
			_, err := s.RecordForge(ctx, ForgeEvent{Type: "avi:forge:installed:app", DedupeKey: "k", Claims: c, At: ts(1)})
			return err
		},
		"ForgeCredentials": func(ctx context.Context) error {
			_, err := s.ForgeCredentials(ctx, "ari:cloud:ecosystem::installation/0a3a7799-53ae-4a5b-9e7e-03338980abb5")
			return err
		},
	}
}

// The pool's own timeouts (a 500 ms connect timeout) bound a call whose
// caller set no deadline, far below DefaultOpTimeout; the bound below leaves
// room for a machine loaded by the race detector and parallel packages.
func TestPostgresUnreachableIsErrUnavailableWithinTheConnectTimeout(t *testing.T) {
	t.Parallel()
	targets := map[string]func(testing.TB) string{
		"connection refused":   testenv.ClosedAddr,
		"server never answers": blackHole,
	}
	for name, addr := range targets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := storeAt(t, addr(t))
			for op, call := range storeCalls(s) {
				// No deadline from the caller: the pool's own timeouts must bound it.
				start := time.Now()
				err := call(context.Background())
				elapsed := time.Since(start)
				if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
					t.Errorf("%s: error = %v, want ErrUnavailable", op, err)
				}
				if bound := 3 * schema.DefaultConnectTimeout; elapsed > bound {
					t.Errorf("%s took %v, want < %v", op, elapsed, bound)
				}
			}
		})
	}
}

func TestLockWaitPastCallerDeadlineIsErrUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "ck", nil), ts(1), ts(1))
	tx, err := b.pool.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(testCtx(t), `SELECT 1 FROM tenants WHERE client_key = 'ck' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.store.Uninstall(ctx, "ck", ReceivedAt(ts(2), ts(2)))
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Uninstall blocked on a row lock past its deadline = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Uninstall returned after %v, want soon after the 300ms deadline", d)
	}
	if err := tx.Rollback(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if h := b.history(t, "ck"); len(h) != 1 {
		t.Errorf("%d history rows, want 1 (the timed-out uninstall wrote nothing)", len(h))
	}
}

func TestTransientClassification(t *testing.T) {
	t.Parallel()
	wrapped := storeErr(fmt.Errorf("x: %w", ErrNotFound), "get")
	if !errors.Is(wrapped, ErrNotFound) || errors.Is(wrapped, ErrUnavailable) {
		t.Errorf("ErrNotFound became %v", wrapped)
	}
	if err := storeErr(errors.New("syntax error"), "get"); errors.Is(err, ErrUnavailable) {
		t.Errorf("a plain error became unavailable: %v", err)
	}
	if err := storeErr(context.DeadlineExceeded, "get"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v, want ErrUnavailable wrapping the cause", err)
	}
}
