package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connectrelay/connectrelay/handlers"
)

// installTokenPrefix prefixes the Redis keys binding signed-install tokens to
// their bodies.
const installTokenPrefix = "connectrelay:install-token:"

// maxInstallTokenTTL bounds how long a binding is kept, whatever exp says
// (the verifier refuses tokens living longer than that anyway).
const maxInstallTokenTTL = 15 * time.Minute

// installTokens is the Redis InstallTokenGuard: the key is the token's hash,
// the value its body's, set with SET NX so that of two replicas receiving
// one token with two bodies exactly one body wins.
type installTokens struct{ rdb *redis.Client }

var _ handlers.InstallTokenGuard = installTokens{}

// Bind records token with body until expires, or reports that the token came
// with another body before.
func (g installTokens) Bind(ctx context.Context, token string, body []byte, expires time.Time) error {
	th, bh := sha256.Sum256([]byte(token)), sha256.Sum256(body)
	key := installTokenPrefix + hex.EncodeToString(th[:])
	ttl := min(max(time.Until(expires), time.Second), maxInstallTokenTTL)
	for range 2 {
		ok, err := g.rdb.SetNX(ctx, key, bh[:], ttl).Result()
		if err != nil {
			return fmt.Errorf("bind install token: %w", err)
		}
		if ok {
			return nil
		}
		have, err := g.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			continue // expired between the two calls: bind again
		}
		if err != nil {
			return fmt.Errorf("read install token binding: %w", err)
		}
		if !bytes.Equal(have, bh[:]) {
			return handlers.ErrInstallTokenReplayed
		}
		return nil
	}
	return nil
}
