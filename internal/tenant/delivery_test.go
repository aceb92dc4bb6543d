package tenant

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// deliver sends one lifecycle event of kind (installed, enabled, disabled,
// uninstalled) for ck as delivery d; the result is its history row's id.
func (b *testBundle) deliver(t *testing.T, kind, ck string, d Delivery, p InstallPayload) (int64, error) {
	t.Helper()
	switch kind {
	case EventInstalled:
		res, err := b.store.Install(testCtx(t), p, d)
		return res.EventID, err
	case EventEnabled, EventDisabled:
		return b.store.SetEnabled(testCtx(t), ck, kind == EventEnabled, d)
	case EventUninstalled:
		return b.store.Uninstall(testCtx(t), ck, d)
	}
	t.Fatalf("unknown kind %q", kind)
	return 0, nil
}

// A copy of a recorded delivery (same token, same body) changes nothing and
// returns the first delivery's history row; the token with another body is
// refused with ErrTokenReused and changes nothing either.
func TestDelivery_CopyIsRecordedOnceAndAnotherBodyIsRefused(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{EventInstalled, EventEnabled, EventDisabled, EventUninstalled} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			const ck = "ck"
			b.install(t, payload(t, ck, nil), ts(1), ts(1))
			if _, err := b.store.SetEnabled(testCtx(t), ck, kind != EventEnabled, ReceivedAt(ts(2), ts(2))); err != nil {
				t.Fatal(err)
			}
			p := payload(t, ck, map[string]any{"sharedSecret": "rotated-secret-0123456789abcdef01234"})
			d := Delivery{At: ts(3), IssuedAt: ts(3), Token: "token-of-" + kind, Body: []byte(`{"body":1}`)}
			first, err := b.deliver(t, kind, ck, d, p)
			if err != nil {
				t.Fatalf("first delivery: %v", err)
			}
			row, events := b.rowJSON(t, ck), len(b.history(t, ck))

			again, err := b.deliver(t, kind, ck, Delivery{At: ts(9), IssuedAt: ts(3), Token: d.Token, Body: d.Body}, p)
			if err != nil || again != first {
				t.Errorf("copy = event %d, %v; want the first's %d", again, err, first)
			}
			other := p
			other.SharedSecret = "attacker-secret-0123456789abcdef0123"
			if _, err := b.deliver(t, kind, ck, Delivery{At: ts(9), IssuedAt: ts(3), Token: d.Token, Body: []byte(`{"body":2}`)}, other); !errors.Is(err, ErrTokenReused) {
				t.Errorf("same token, another body: err = %v, want ErrTokenReused", err)
			}
			if got := b.rowJSON(t, ck); got != row {
				t.Errorf("tenant changed by a copy or a replay:\n%s\nwant\n%s", got, row)
			}
			if got := len(b.history(t, ck)); got != events {
				t.Errorf("history rows = %d after the copy and the replay, want %d", got, events)
			}
		})
	}
}

// A token recorded for one tenant is refused for another: a history row
// binds a token to its tenant too.
func TestDelivery_TokenOfAnotherTenantIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "a", nil), ts(1), ts(1))
	b.install(t, payload(t, "b", nil), ts(1), ts(1))
	d := Delivery{At: ts(2), Token: "one-token", Body: []byte(`{}`)}
	if _, err := b.store.SetEnabled(testCtx(t), "a", true, d); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.SetEnabled(testCtx(t), "b", true, d); !errors.Is(err, ErrTokenReused) {
		t.Errorf("a's token for b: err = %v, want ErrTokenReused", err)
	}
	if b.get(t, "b").Enabled {
		t.Error("b was enabled by a's token")
	}
}

// Copies of one delivery arriving at once are applied once: each waits for
// the tenant's row lock, and all but the first find its history row.
func TestDelivery_ConcurrentCopiesAreAppliedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "ck", nil), ts(1), ts(1))
	const n = 8
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = b.store.SetEnabled(testCtx(t), "ck", true,
				Delivery{At: ts(2 + i), IssuedAt: ts(2), Token: "shared", Body: []byte(`{}`)})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("copy %d = event %d, %v; want event %d", i, ids[i], errs[i], ids[0])
		}
	}
	if got := b.count(t, `SELECT count(*) FROM tenant_events WHERE client_key = 'ck' AND type = 'enabled'`); got != 1 {
		t.Errorf("enabled history rows = %d, want 1", got)
	}
}

// Only digests are stored: no column of the history holds the token or the
// body.
func TestDelivery_StoresDigestsNotTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "ck", nil), ts(1), ts(1))
	const token = "eyJhbGciOiJIUzI1NiJ9.a-token-that-must-not-be-stored.sig"
	if _, err := b.store.SetEnabled(testCtx(t), "ck", true, Delivery{At: ts(2), Token: token, Body: []byte(`{"clientKey":"ck"}`)}); err != nil {
		t.Fatal(err)
	}
	var dump string
	if err := b.pool.QueryRow(testCtx(t), `SELECT string_agg(row_to_json(e)::text, ' ') FROM tenant_events e`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, "a-token-that-must-not-be-stored") || strings.Contains(dump, `\"clientKey\"`) {
		t.Errorf("history holds the token or the body: %s", dump)
	}
	if got := b.count(t, `SELECT count(*) FROM tenant_events WHERE length(token_sha256) = 32 AND length(body_sha256) = 32`); got != 1 {
		t.Errorf("rows with 32-byte digests = %d, want 1", got)
	}
}

// An install of a clientKey that another transaction is inserting at the
// same moment (a concurrent first install) waits for it, then updates the
// row it made: one tenant, the later install applied over the first.
func TestInstall_NewClientKeyInsertedConcurrentlyUpdatesTheOtherRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	other, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	if _, err := other.Exec(ctx, `INSERT INTO tenants (client_key, app_key, base_url, installed, enabled,
		first_installed_at, last_installed_at, last_lifecycle_at, data_iat, installed_iat, enabled_iat,
		secret_key_id, secret_nonce, secret_ciphertext, key_env)
		VALUES ('ck', 'com.example.app', 'https://example.atlassian.net', true, false, $1, $1, $1, $1, $1, $1,
		'none', '\x00', '\x00', 'production')`, ts(1)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res InstallResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := b.store.Install(ctx, payload(t, "ck", nil), ReceivedAt(ts(2), ts(2)))
		done <- result{res, err}
	}()
	// The install found no stored row and its insert waits for the other one.
	deadline := time.Now().Add(10 * time.Second)
	for b.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO tenants%'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the install never waited for the concurrent insert")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Install beside a concurrent first install: %v", r.err)
	}
	if r.res.Created || !r.res.Applied {
		t.Errorf("result = created %v, applied %v; want an applied update of the other row", r.res.Created, r.res.Applied)
	}
	// The other row's undecryptable secret was replaced by the install's.
	if got := b.secret(t, "ck"); got != payload(t, "ck", nil).SharedSecret {
		t.Errorf("secret = %q, want the install's", got)
	}
	if got := b.count(t, `SELECT count(*) FROM tenants`); got != 1 {
		t.Errorf("tenants = %d, want 1", got)
	}
}
