package tenant

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrDecrypt means a stored secret cannot be decrypted: it was sealed with a key this
// process does not have, sealed for another clientKey (a row copied between tenants),
// or altered.
var ErrDecrypt = errors.New("shared secret cannot be decrypted")

// SecretKeySize is the length of a SecretBox key: AES-256.
const SecretKeySize = 32

// aadPrefix versions and scopes the additional data, so a ciphertext made for another
// purpose with the same key never opens as a tenant secret.
const aadPrefix = "connectrelay tenant shared secret v1\x00"

// Sealed is an encrypted shared secret as stored: the id of the key that sealed it, a
// random nonce, and the AES-GCM ciphertext with its tag.
type Sealed struct {
	KeyID      string
	Nonce      []byte
	Ciphertext []byte
}

// SecretBox encrypts tenants' shared secrets at rest with AES-256-GCM. The clientKey
// is the additional authenticated data, so a ciphertext copied onto another tenant's
// row fails to decrypt instead of handing that tenant a foreign secret. It seals with
// the primary key and opens with any of its keys, which is how keys are rotated: deploy
// the new key as primary with the old one as previous, run Store.ReencryptSecrets, then
// drop the old key. A SecretBox is safe for concurrent use.
type SecretBox struct {
	primary string
	aeads   map[string]cipher.AEAD
}

// NewSecretBox returns a SecretBox sealing with primary and opening with primary and
// every previous key. Each key must be SecretKeySize bytes.
func NewSecretBox(primary []byte, previous ...[]byte) (*SecretBox, error) {
	b := &SecretBox{aeads: make(map[string]cipher.AEAD, 1+len(previous))}
	for i, key := range append([][]byte{primary}, previous...) {
		if len(key) != SecretKeySize {
			which := "primary key"
			if i > 0 {
				which = fmt.Sprintf("previous key %d", i)
			}
			return nil, fmt.Errorf("secret box: %s is %d bytes, want %d", which, len(key), SecretKeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("secret box: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secret box: %w", err)
		}
		id := KeyID(key)
		if i == 0 {
			b.primary = id
		}
		b.aeads[id] = aead
	}
	return b, nil
}

// KeyID derives the public id of a key: the first 8 bytes, in hex, of
// SHA-256("connectrelay key id" || key). It is stored beside each ciphertext so the
// right key is picked without trial decryption, and it reveals nothing useful about
// the key.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("connectrelay key id"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// PrimaryKeyID is the id of the key Seal uses.
func (b *SecretBox) PrimaryKeyID() string { return b.primary }

func aad(clientKey string) []byte { return []byte(aadPrefix + clientKey) }

// Seal encrypts secret for clientKey with the primary key and a fresh random nonce.
func (b *SecretBox) Seal(clientKey string, secret []byte) (Sealed, error) {
	aead := b.aeads[b.primary]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Sealed{}, fmt.Errorf("secret box: nonce: %w", err)
	}
	return Sealed{
		KeyID:      b.primary,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, secret, aad(clientKey)),
	}, nil
}

// Open decrypts s, which must have been sealed for clientKey by one of the box's
// keys. Errors wrap ErrDecrypt.
func (b *SecretBox) Open(clientKey string, s Sealed) ([]byte, error) {
	aead, ok := b.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: sealed with unknown key %s", ErrDecrypt, s.KeyID)
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: nonce is %d bytes", ErrDecrypt, len(s.Nonce))
	}
	secret, err := aead.Open(nil, s.Nonce, s.Ciphertext, aad(clientKey))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed for clientKey %s", ErrDecrypt, clientKey)
	}
	return secret, nil
}
