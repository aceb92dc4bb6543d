package tenant

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/connectrelay/connectrelay"
)

func TestSecretBoxRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	k1 := newKey(t)
	box, err := NewSecretBox(k1)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("a-secret-key-not-to-be-lost")
	s, err := box.Seal("ck-a", secret)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != KeyID(k1) || len(s.Nonce) != 12 || bytes.Contains(s.Ciphertext, secret) {
		t.Errorf("sealed = %+v, want key id %s, a 12-byte nonce, no plaintext", s, KeyID(k1))
	}
	got, err := box.Open("ck-a", s)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v; want the secret", got, err)
	}
	again, _ := box.Seal("ck-a", secret)
	if bytes.Equal(again.Nonce, s.Nonce) || bytes.Equal(again.Ciphertext, s.Ciphertext) {
		t.Error("two seals of one secret are identical; nonces must be random")
	}

	other, _ := NewSecretBox(newKey(t))
	flipped := Sealed{KeyID: s.KeyID, Nonce: s.Nonce, Ciphertext: slices.Clone(s.Ciphertext)}
	flipped.Ciphertext[0] ^= 1
	for desc, open := range map[string]func() ([]byte, error){
		"other clientKey": func() ([]byte, error) { return box.Open("ck-b", s) },
		"other key":       func() ([]byte, error) { return other.Open("ck-a", s) },
		"tampered":        func() ([]byte, error) { return box.Open("ck-a", flipped) },
		"short nonce": func() ([]byte, error) {
			return box.Open("ck-a", Sealed{KeyID: s.KeyID, Nonce: s.Nonce[:4], Ciphertext: s.Ciphertext})
		},
		"relabelled keyid": func() ([]byte, error) {
			return other.Open("ck-a", Sealed{KeyID: other.PrimaryKeyID(), Nonce: s.Nonce, Ciphertext: s.Ciphertext})
		},
	} {
		if got, err := open(); !errors.Is(err, ErrDecrypt) || got != nil {
			t.Errorf("%s: Open = %q, %v; want ErrDecrypt", desc, got, err)
		}
	}
}

func TestSecretBoxPreviousKeysOpen(t *testing.T) {
	t.Parallel()
	oldKey, newK := newKey(t), newKey(t)
	oldBox, _ := NewSecretBox(oldKey)
	s, _ := oldBox.Seal("ck", []byte("s"))
	rotated, err := NewSecretBox(newK, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open("ck", s); err != nil || string(got) != "s" {
		t.Errorf("Open with previous key = %q, %v", got, err)
	}
	if s2, _ := rotated.Seal("ck", []byte("s")); s2.KeyID != KeyID(newK) {
		t.Errorf("Seal used key %s, want the primary %s", s2.KeyID, KeyID(newK))
	}
}

func TestNewSecretBoxRejectsBadKeys(t *testing.T) {
	t.Parallel()
	if _, err := NewSecretBox(make([]byte, 16)); err == nil || !strings.Contains(err.Error(), "primary key is 16 bytes") {
		t.Errorf("16-byte primary: %v", err)
	}
	if _, err := NewSecretBox(newKey(t), newKey(t), []byte("short")); err == nil || !strings.Contains(err.Error(), "previous key 2") {
		t.Errorf("short previous key: %v", err)
	}
}

func TestKeyIDIsStableAndDistinct(t *testing.T) {
	t.Parallel()
	k := bytes.Repeat([]byte{7}, 32)
	// Pinned (computed outside Go): the id is stored in rows, so its derivation must
	// never change.
	if got, want := KeyID(k), "a54d46a60969ede3"; got != want {
		t.Errorf("KeyID = %q, want %q", got, want)
	}
	if KeyID(k) == KeyID(bytes.Repeat([]byte{8}, 32)) {
		t.Error("two keys share an id")
	}
	if strings.Contains(KeyID(k), hex.EncodeToString(k[:8])) {
		t.Error("key id reveals key bytes")
	}
}

func TestCiphertextMovedToAnotherTenantDoesNotDecrypt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.install(t, payload(t, "victim", nil), ts(1), ts(1))
	b.install(t, payload(t, "attacker", nil), ts(1), ts(1))
	if _, err := b.pool.Exec(testCtx(t), `UPDATE tenants v
		SET secret_key_id = a.secret_key_id, secret_nonce = a.secret_nonce, secret_ciphertext = a.secret_ciphertext
		FROM tenants a WHERE v.client_key = 'victim' AND a.client_key = 'attacker'`); err != nil {
		t.Fatal(err)
	}
	if got, err := b.store.SharedSecret(testCtx(t), "victim"); !errors.Is(err, ErrDecrypt) || got != nil {
		t.Errorf("SharedSecret(victim) with attacker's ciphertext = %q, %v; want ErrDecrypt", got, err)
	}
	// An install over the broken row replaces the secret and says so.
	res := b.install(t, payload(t, "victim", nil), ts(2), ts(2))
	if !slices.Contains(res.Changes, "secret replaced (the previous one could not be decrypted)") {
		t.Errorf("changes = %q, want a replaced-secret note", res.Changes)
	}
	if s := b.secret(t, "victim"); s != "secret-of-victim" {
		t.Errorf("secret after reinstall = %q", s)
	}
}

func TestKeyRotationAndReencryption(t *testing.T) {
	t.Parallel()
	b := setup(t) // sealing with b.key
	for _, ck := range []string{"a", "b", "c"} {
		b.install(t, payload(t, ck, nil), ts(1), ts(1))
	}
	newK := newKey(t)
	rotatedBox, err := NewSecretBox(newK, b.key)
	if err != nil {
		t.Fatal(err)
	}
	rotated := NewStore(b.pool, rotatedBox, testLogger(t))
	ctx := testCtx(t)
	if s, err := rotated.SharedSecret(ctx, "a"); err != nil || string(s) != "secret-of-a" {
		t.Fatalf("previous-key decryption = %q, %v", s, err)
	}
	res, err := rotated.Install(ctx, payload(t, "c", nil), ReceivedAt(ts(2), ts(2)))
	if err != nil || res.Tenant.SecretKeyID != KeyID(newK) {
		t.Fatalf("install after rotation: key %s, %v; want %s", res.Tenant.SecretKeyID, err, KeyID(newK))
	}
	newOnlyBox, _ := NewSecretBox(newK)
	newOnly := NewStore(b.pool, newOnlyBox, testLogger(t))
	if _, err := newOnly.SharedSecret(ctx, "a"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("new key alone before re-encryption = %v, want ErrDecrypt", err)
	}

	n, err := rotated.ReencryptSecrets(ctx, 1)
	if err != nil || n != 2 {
		t.Fatalf("ReencryptSecrets = %d, %v; want 2 (a and b), nil", n, err)
	}
	for _, ck := range []string{"a", "b", "c"} {
		if s, err := newOnly.SharedSecret(ctx, ck); err != nil || string(s) != "secret-of-"+ck {
			t.Errorf("after re-encryption, %s = %q, %v", ck, s, err)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM tenants WHERE secret_key_id <> $1`, KeyID(newK)); n != 0 {
		t.Errorf("%d rows still sealed with the old key", n)
	}
	if n, err := rotated.ReencryptSecrets(ctx, 10); err != nil || n != 0 {
		t.Errorf("second ReencryptSecrets = %d, %v; want 0, nil", n, err)
	}

	// A row sealed with a key nobody has is reported, not looped on, and the rest
	// is still done.
	lost, _ := NewSecretBox(newKey(t))
	lostStore := NewStore(b.pool, lost, testLogger(t))
	if _, err := lostStore.Install(ctx, payload(t, "orphan", nil), ReceivedAt(ts(3), ts(3))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Install(ctx, payload(t, "d", nil), ReceivedAt(ts(3), ts(3))); err != nil {
		t.Fatal(err)
	}
	n, err = rotated.ReencryptSecrets(ctx, 1)
	if n != 1 || !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "orphan") {
		t.Errorf("ReencryptSecrets with an orphan = %d, %v; want 1 and an ErrDecrypt naming orphan", n, err)
	}
}

// TestNoPlaintextSecretInAnyTable exercises every write path, then reads every row of
// every table and looks for the secrets in plain, hex and base64 form.
func TestNoPlaintextSecretInAnyTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	secrets := []string{"first-plaintext-secret-7a1c", "rotated-plaintext-secret-93fe", "imported-plaintext-secret-55d0"}
	const site = "https://dump.atlassian.net"
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": secrets[0], "baseUrl": site, "publicKey": secrets[0]}), ts(1), ts(1))
	b.install(t, payload(t, "ck", map[string]any{"sharedSecret": secrets[1], "baseUrl": site}), ts(2), ts(2))
	b.install(t, payload(t, "imported", map[string]any{"sharedSecret": secrets[2], "baseUrl": site}), ts(3), ts(3))
	if _, err := b.store.SetEnabled(ctx, "ck", true, ReceivedAt(ts(4), ts(4))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Uninstall(ctx, "ck", ReceivedAt(ts(5), ts(5))); err != nil {
		t.Fatal(err)
	}
	if err := b.store.SetLicense(ctx, "ck", connectrelay.LicenseActive, ts(6)); err != nil {
		t.Fatal(err)
	}
	if err := b.store.SetWebhookRegistered(ctx, "imported", []string{"https://app/migration/events"}, ts(6)); err != nil {
		t.Fatal(err)
	}
	rotatedBox, _ := NewSecretBox(newKey(t), b.key)
	if _, err := NewStore(b.pool, rotatedBox, nil).ReencryptSecrets(ctx, 10); err != nil {
		t.Fatal(err)
	}

	dump := func() map[string][]string {
		t.Helper()
		rows, err := b.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`)
		if err != nil {
			t.Fatal(err)
		}
		var tables []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			tables = append(tables, name)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		out := make(map[string][]string)
		for _, table := range tables {
			rows, err := b.pool.Query(ctx, `SELECT row_to_json(t)::text FROM "`+table+`" t`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var js string
				if err := rows.Scan(&js); err != nil {
					t.Fatal(err)
				}
				out[table] = append(out[table], js)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	find := func(d map[string][]string, secret string) []string {
		forms := []string{secret, hex.EncodeToString([]byte(secret)), base64.StdEncoding.EncodeToString([]byte(secret)),
			base64.RawStdEncoding.EncodeToString([]byte(secret))}
		var hits []string
		for table, rows := range d {
			for _, row := range rows {
				for _, f := range forms {
					if strings.Contains(strings.ToLower(row), strings.ToLower(f)) {
						hits = append(hits, table+": "+row)
					}
				}
			}
		}
		return hits
	}

	d := dump()
	for _, table := range []string{"tenants", "tenant_events", "tenant_links", "schema_migrations"} {
		if len(d[table]) == 0 {
			t.Errorf("table %s is empty; the dump would not prove anything about it", table)
		}
	}
	for _, s := range secrets {
		if hits := find(d, s); len(hits) > 0 {
			t.Errorf("secret %q found:\n%s", s, strings.Join(hits, "\n"))
		}
	}

	// The scan must be able to see a secret if one were stored (in any of the forms).
	if _, err := b.pool.Exec(ctx, `CREATE TABLE leak (v text, b bytea)`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `INSERT INTO leak VALUES ('x', $1)`, []byte(secrets[1])); err != nil {
		t.Fatal(err)
	}
	if hits := find(dump(), secrets[1]); len(hits) != 1 || !strings.HasPrefix(hits[0], "leak: ") {
		t.Errorf("control: a bytea copy of the secret gave hits %q, want exactly the leak row", hits)
	}
}
