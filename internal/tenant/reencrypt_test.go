package tenant

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReencryptSecrets_RowLockedByAnotherWriterIsStillReencrypted: a row locked
// by a write that does not touch the secret (a license update, say) must not be
// skipped. Skipping it left the row under the old key and reported success, and
// dropping the old key afterwards made that tenant's secret undecryptable.
func TestReencryptSecrets_RowLockedByAnotherWriterIsStillReencrypted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "locked", nil), ts(1), ts(1))
	newK := newKey(t)
	rotatedBox, err := NewSecretBox(newK, b.key)
	if err != nil {
		t.Fatal(err)
	}
	rotated := NewStore(b.pool, rotatedBox, testLogger(t))
	ctx := testCtx(t)

	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM tenants WHERE client_key = 'locked' FOR NO KEY UPDATE`); err != nil {
		_ = tx.Rollback(context.Background())
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		if _, err := tx.Exec(ctx, `UPDATE tenants SET license_state = 'active' WHERE client_key = 'locked'`); err != nil {
			_ = tx.Rollback(context.Background())
			committed <- err
			return
		}
		committed <- tx.Commit(ctx)
	}()
	_, err = rotated.ReencryptSecrets(ctx, 10)
	if cerr := <-committed; cerr != nil {
		t.Fatalf("the other writer's transaction: %v", cerr)
	}
	if err != nil {
		t.Fatalf("ReencryptSecrets: %v", err)
	}
	if n := b.count(t, `SELECT count(*) FROM tenants WHERE secret_key_id <> $1`, KeyID(newK)); n != 0 {
		t.Errorf("%d row(s) left sealed with the old key after ReencryptSecrets reported success", n)
	}
}

// TestReencrypt_ConcurrentInstallsKeepTheNewestSecret: re-encryption racing
// installs that rotate secrets never writes back a secret it read before the
// rotation, and leaves every row under the primary key.
func TestReencrypt_ConcurrentInstallsKeepTheNewestSecret(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 40
	for i := range n {
		b.install(t, payload(t, fmt.Sprintf("ck-%02d", i), nil), ts(1), ts(1))
	}
	newK := newKey(t)
	rotatedBox, err := NewSecretBox(newK, b.key)
	if err != nil {
		t.Fatal(err)
	}
	rotated := NewStore(b.pool, rotatedBox, testLogger(t))
	ctx := testCtx(t)

	var wg sync.WaitGroup
	installErrs := make(chan error, n)
	wg.Go(func() {
		for i := n - 1; i >= 0; i-- {
			ck := fmt.Sprintf("ck-%02d", i)
			// Half through a process still on the old key (a rolling deploy),
			// half through one on the new key.
			st := b.store
			if i%2 == 0 {
				st = rotated
			}
			p := payload(t, ck, map[string]any{"sharedSecret": "rotated-" + ck})
			if _, err := st.Install(ctx, p, ReceivedAt(ts(2), ts(2))); err != nil {
				installErrs <- err
			}
		}
	})
	rep, err := rotated.Reencrypt(ctx, 7)
	wg.Wait()
	close(installErrs)
	for err := range installErrs {
		t.Errorf("concurrent install: %v", err)
	}
	if err != nil {
		t.Fatalf("Reencrypt: %v", err)
	}
	if rep.Reencrypted == 0 || rep.Reencrypted > 2*n {
		t.Errorf("Reencrypted = %d, want between 1 and %d", rep.Reencrypted, 2*n)
	}
	// Installs through the old-key process may have landed after the run: a
	// second run picks them up, and a third has nothing left.
	if _, err := rotated.Reencrypt(ctx, 7); err != nil {
		t.Fatalf("second Reencrypt: %v", err)
	}
	again, err := rotated.Reencrypt(ctx, 7)
	if err != nil || again.Reencrypted != 0 || again.Total != n || again.Current != n {
		t.Errorf("third Reencrypt = %+v, %v; want 0 re-encrypted, %d current of %d", again, err, n, n)
	}
	newOnlyBox, _ := NewSecretBox(newK)
	newOnly := NewStore(b.pool, newOnlyBox, testLogger(t))
	for i := range n {
		ck := fmt.Sprintf("ck-%02d", i)
		s, err := newOnly.SharedSecret(ctx, ck)
		if err != nil || string(s) != "rotated-"+ck {
			t.Errorf("%s with the new key alone = %q, %v; want the rotated secret", ck, s, err)
		}
	}
}
