package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/events"
)

// tierState is what New takes from the tier's bucket: the key set registry tokens
// are signed and verified with (this member's private key in cfg.TokenKeyFile) and
// the shared upload secret.
func tierState(ctx context.Context, cfg Config) (TokenKeys, string, error) {
	if cfg.TokenKeyFile == "" {
		return nil, "", errors.New("registry: a tier needs a token key file for this member's key")
	}
	keys, err := NewKeySet(ctx, KeySetConfig{Bucket: cfg.Tier, KeyFile: cfg.TokenKeyFile, Now: cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, "", err
	}
	secret, err := TierUploadSecret(ctx, cfg.Tier)
	return keys, secret, err
}

// uploadSecretKey is the upload secret's key in the tier's bucket.
const uploadSecretKey = "upload-secret"

func newUploadSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("upload secret: %w", err)
	}
	return []byte(hex.EncodeToString(b)), nil
}

// TierUploadSecret returns the upload secret every member of a tier signs upload
// state with (distribution's http.secret), made once by whichever member asks
// first: the bucket's create is the compare-and-set, and the others read what won.
// It is a shared secret, so it is stored as is, in the node's own JetStream
// account, which no child's login can read (each child has an account of its own
// without JetStream).
func TierUploadSecret(ctx context.Context, b *events.Bucket) (string, error) {
	for range 3 {
		v, _, err := b.Get(ctx, uploadSecretKey)
		if err == nil && len(v) >= 32 {
			return string(v), nil
		}
		if err != nil && !errors.Is(err, events.ErrKeyNotFound) {
			return "", fmt.Errorf("upload secret: %w", err)
		}
		if err == nil {
			return "", fmt.Errorf("upload secret: the tier's is %d bytes long: want at least 32", len(v))
		}
		s, err := newUploadSecret()
		if err != nil {
			return "", err
		}
		if err := b.Create(ctx, uploadSecretKey, s); err == nil {
			return string(s), nil
		} else if !errors.Is(err, events.ErrKeyChanged) {
			return "", fmt.Errorf("upload secret: %w", err)
		}
		// Another member made it first: read theirs.
	}
	return "", errors.New("upload secret: the tier's keeps changing: try again")
}
