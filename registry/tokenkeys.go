package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"

	"github.com/outpost-edge/outpost/events"
)

// TokenKeys are the keys registry tokens are signed with and verified against. A
// node alone signs with its own key (singleKey); the members of a root tier each
// sign with their own and trust one another's (KeySet).
type TokenKeys interface {
	// Signing is the key to sign a token with now.
	Signing(ctx context.Context) (SigningKey, error)
	// Trusted is the public key with id kid, or an error saying why tokens it
	// signed are not accepted here.
	Trusted(ctx context.Context, kid string) (TrustedKey, error)
}

var (
	_ TokenKeys = (*KeySet)(nil)
	_ TokenKeys = singleKey{}
)

// SigningKey is a private key and its key id (the kid of the tokens it signs).
type SigningKey struct {
	Kid string
	Key *ecdsa.PrivateKey
}

// TrustedKey is a public key tokens are verified against.
type TrustedKey struct {
	Public *ecdsa.PublicKey
	// SignUntil is when its holder stopped (or stops) signing with it: a token
	// issued later is refused. Zero: no end.
	SignUntil time.Time
}

// ErrKeyNotTrusted is a token key id this node does not accept.
var ErrKeyNotTrusted = errors.New("key not trusted")

func newSigningKey(key *ecdsa.PrivateKey) SigningKey {
	return SigningKey{Kid: token.GetJWKThumbprint(key.Public()), Key: key}
}

// singleKey is one process's own key: signs and alone is trusted.
type singleKey struct{ k SigningKey }

func (s singleKey) Signing(context.Context) (SigningKey, error) { return s.k, nil }

func (s singleKey) Trusted(_ context.Context, kid string) (TrustedKey, error) {
	if kid != s.k.Kid {
		return TrustedKey{}, fmt.Errorf("%w: this node signs with key %q only (another node's token?)", ErrKeyNotTrusted, s.k.Kid)
	}
	return TrustedKey{Public: &s.k.Key.PublicKey}, nil
}

// Key set defaults.
const (
	// DefaultKeyRotation is how long a member signs with one key before it makes
	// the next.
	DefaultKeyRotation = 7 * 24 * time.Hour
	// DefaultKeyRefresh is how long a member trusts its copy of the set: a key
	// removed from the bucket stops being accepted within it.
	DefaultKeyRefresh = 10 * time.Second
	// keyReloadEvery bounds the reloads a token with an unknown kid causes, so a
	// flood of made-up kids cannot hammer the bucket.
	keyReloadEvery = time.Second
	// keyPrefix starts the bucket keys of the set: token-key.<base64url kid>.
	keyPrefix = "token-key."
)

// KeySetConfig configures a KeySet.
type KeySetConfig struct {
	// Bucket holds the set (events.BucketTier), shared by the tier's members
	// through their JetStream cluster. Required.
	Bucket *events.Bucket
	// KeyFile holds this member's private key (0600), made on first start and
	// replaced at each rotation. The private key never leaves the member: only
	// its public key goes in the set. Required.
	KeyFile string
	// Member names this member in the set, for operators. Default: the host name.
	Member string
	// RotateEvery is how long the member signs with one key; default
	// DefaultKeyRotation. An old key stays trusted until the last token it signed
	// expired (tokenLifetime), then it is removed from the set.
	RotateEvery time.Duration
	// Refresh is how long a read of the set is trusted; default DefaultKeyRefresh.
	Refresh time.Duration
	// Now is the clock that key lifetimes and token times are read by; default
	// time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultKeySetConfig returns the defaults; Bucket and KeyFile remain to be set.
func DefaultKeySetConfig() KeySetConfig {
	host, _ := os.Hostname()
	return KeySetConfig{Member: host, RotateEvery: DefaultKeyRotation, Refresh: DefaultKeyRefresh, Now: time.Now,
		Logger: slog.Default()}
}

// Validate names the first field that is missing or wrong.
func (c *KeySetConfig) Validate() error {
	switch {
	case c.Bucket == nil:
		return errors.New("token key set: no bucket")
	case c.KeyFile == "":
		return errors.New("token key set: no key file")
	case c.RotateEvery < 2*tokenLifetime:
		return fmt.Errorf("token key set: rotation every %s: must be at least %s (twice a token's lifetime)", c.RotateEvery, 2*tokenLifetime)
	case c.Refresh <= 0:
		return fmt.Errorf("token key set: refresh %s: must be positive", c.Refresh)
	case c.Now == nil:
		return errors.New("token key set: no clock")
	}
	return nil
}

// keyEntry is one public key of the set, as stored in the bucket.
type keyEntry struct {
	Kid       string    `json:"kid"`
	Member    string    `json:"member"`
	Public    []byte    `json:"public"` // PKIX DER
	Created   time.Time `json:"created"`
	SignUntil time.Time `json:"signUntil"`

	key *ecdsa.PublicKey
}

// trustedUntil is when the last token the key may have signed expires.
func (e keyEntry) trustedUntil() time.Time { return e.SignUntil.Add(tokenLifetime + token.Leeway) }

func entryKey(kid string) string {
	return keyPrefix + base64.RawURLEncoding.EncodeToString([]byte(kid))
}

// KeySet is a tier's registry token keys: every member signs with its own private
// key, publishes the public key in the tier's bucket, and trusts exactly the keys
// there. Verification is pinned to the set: a token never brings its key.
type KeySet struct {
	cfg KeySetConfig

	mu       sync.Mutex
	own      SigningKey
	ownUntil time.Time // zero until the own key is in the set
	set      map[string]keyEntry
	readAt   time.Time // real time of the last read of the set
}

// NewKeySet loads or makes this member's key, publishes it and reads the set.
func NewKeySet(ctx context.Context, cfg KeySetConfig) (*KeySet, error) {
	def := DefaultKeySetConfig()
	if cfg.Member == "" {
		cfg.Member = def.Member
	}
	if cfg.RotateEvery == 0 {
		cfg.RotateEvery = def.RotateEvery
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = def.Refresh
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := loadSigningKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	k := &KeySet{cfg: cfg, own: newSigningKey(key)}
	// Every key another member publishes or removes from here on is applied as it is
	// written: a member that died leaves keys the others already hold, so its
	// tokens verify during the tier's failover, when the bucket may not answer a
	// read for seconds. The periodic read stays, for what a watch could miss.
	applyChange := func(c events.KeyChange) { k.applyChange(c.Key, c.Value, c.Deleted) }
	if err := cfg.Bucket.Watch(ctx, keyPrefix+"*", applyChange, nil); err != nil {
		return nil, fmt.Errorf("token key set: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.publish(ctx); err != nil {
		return nil, err
	}
	if err := k.reload(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// publish puts the own key in the set, or learns until when it signs if it is
// there already (a restart).
func (k *KeySet) publish(ctx context.Context) error {
	now := k.cfg.Now().UTC()
	der, err := x509.MarshalPKIXPublicKey(&k.own.Key.PublicKey)
	if err != nil {
		return fmt.Errorf("token key set: %w", err)
	}
	e := keyEntry{Kid: k.own.Kid, Member: k.cfg.Member, Public: der, Created: now, SignUntil: now.Add(k.cfg.RotateEvery)}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	name := entryKey(k.own.Kid)
	err = k.cfg.Bucket.Create(ctx, name, data)
	if errors.Is(err, events.ErrKeyChanged) {
		stored, _, gerr := k.cfg.Bucket.Get(ctx, name)
		if gerr != nil {
			return fmt.Errorf("token key set: own key: %w", gerr)
		}
		if err := json.Unmarshal(stored, &e); err != nil {
			return fmt.Errorf("token key set: own key entry: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("token key set: publish own key: %w", err)
	}
	k.ownUntil = e.SignUntil
	return nil
}

// Signing returns the member's key, rotating it first when its time is up.
func (k *KeySet) Signing(ctx context.Context) (SigningKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ownUntil.IsZero() {
		if err := k.publish(ctx); err != nil {
			return SigningKey{}, err
		}
	}
	if !k.cfg.Now().Before(k.ownUntil) {
		if err := k.rotate(ctx); err != nil {
			return SigningKey{}, err
		}
	}
	return k.own, nil
}

// Rotate makes a new key now; the old one stays trusted until its tokens expired.
func (k *KeySet) Rotate(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rotate(ctx)
}

func (k *KeySet) rotate(ctx context.Context) error {
	old := k.own
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("token key rotation: %w", err)
	}
	// The old key's entry ends its signing now (it may have been made to last
	// longer): tokens it signs from here on are refused everywhere.
	if data, rev, err := k.cfg.Bucket.Get(ctx, entryKey(old.Kid)); err == nil {
		var e keyEntry
		if json.Unmarshal(data, &e) == nil && e.SignUntil.After(k.cfg.Now()) {
			e.SignUntil = k.cfg.Now().UTC()
			if b, err := json.Marshal(e); err == nil {
				_ = k.cfg.Bucket.Update(ctx, entryKey(old.Kid), b, rev) // a failure only leaves it trusted longer
			}
		}
	}
	// The file first: a member that dies before publishing publishes at restart.
	if err := writeSigningKey(k.cfg.KeyFile, key); err != nil {
		return fmt.Errorf("token key rotation: %w", err)
	}
	k.own, k.ownUntil = newSigningKey(key), time.Time{}
	if err := k.publish(ctx); err != nil {
		return fmt.Errorf("token key rotation: %w", err)
	}
	k.readAt = time.Time{} // read the set again at the next verify
	k.cfg.Logger.Info("registry token key rotated", "old", old.Kid, "new", k.own.Kid, "member", k.cfg.Member,
		"signs_until", k.ownUntil.Format(time.RFC3339))
	return nil
}

// Trusted returns the key with id kid if it is in the set and its tokens may still
// be valid.
func (k *KeySet) Trusted(ctx context.Context, kid string) (TrustedKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.set[kid]
	if since := time.Since(k.readAt); since > k.cfg.Refresh || (!ok && since > keyReloadEvery) {
		if err := k.reload(ctx); err != nil {
			// Keep the last good read, and try again only after the refresh: a
			// bucket that does not answer (a JetStream leader change) must not
			// stop or slow every client meanwhile.
			k.readAt = time.Now()
			k.cfg.Logger.Warn("token key set not read again: the last read stays in use", "err", err)
		}
		e, ok = k.set[kid]
	}
	if !ok {
		return TrustedKey{}, fmt.Errorf("%w: key %q is not in this tier's key set (made up, or removed)", ErrKeyNotTrusted, kid)
	}
	if now := k.cfg.Now(); now.After(e.trustedUntil()) {
		return TrustedKey{}, fmt.Errorf("%w: key %q of member %s stopped signing at %s and its tokens expired",
			ErrKeyNotTrusted, kid, e.Member, e.SignUntil.Format(time.RFC3339))
	}
	return TrustedKey{Public: e.key, SignUntil: e.SignUntil}, nil
}

// applyChange applies one write to the set, seen by the watch.
func (k *KeySet) applyChange(name string, data []byte, deleted bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if deleted {
		// The name is the kid base64-encoded (entryKey).
		if kid, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(name, keyPrefix)); err == nil {
			delete(k.set, string(kid))
		}
		return
	}
	e, err := parseKeyEntry(name, data)
	if err != nil {
		k.cfg.Logger.Warn("token key set: entry skipped", "key", name, "err", err)
		return
	}
	if k.set == nil {
		k.set = map[string]keyEntry{}
	}
	k.set[e.Kid] = e
}

// reload reads the set, and removes from the bucket the keys whose last tokens
// expired (any member may: it is the same decision everywhere).
func (k *KeySet) reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	keys, err := k.cfg.Bucket.Keys(ctx)
	if err != nil {
		return fmt.Errorf("token key set: %w", err)
	}
	now := k.cfg.Now()
	set := map[string]keyEntry{}
	for _, name := range keys {
		if !strings.HasPrefix(name, keyPrefix) {
			continue
		}
		data, _, err := k.cfg.Bucket.Get(ctx, name)
		if errors.Is(err, events.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("token key set: %w", err)
		}
		e, err := parseKeyEntry(name, data)
		if err != nil {
			k.cfg.Logger.Warn("token key set: entry skipped", "key", name, "err", err)
			continue
		}
		if now.After(e.trustedUntil()) && e.Kid != k.own.Kid {
			if err := k.cfg.Bucket.Delete(ctx, name); err == nil {
				k.cfg.Logger.Info("registry token key removed from the set: its last tokens expired", "kid", e.Kid, "member", e.Member)
			}
			continue
		}
		set[e.Kid] = e
	}
	k.set, k.readAt = set, time.Now()
	return nil
}

func parseKeyEntry(name string, data []byte) (keyEntry, error) {
	var e keyEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return e, err
	}
	if entryKey(e.Kid) != name {
		return e, fmt.Errorf("kid %q is stored under another name", e.Kid)
	}
	pub, err := x509.ParsePKIXPublicKey(e.Public)
	if err != nil {
		return e, err
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return e, errors.New("not a P-256 key")
	}
	if token.GetJWKThumbprint(ec) != e.Kid {
		return e, fmt.Errorf("kid %q does not match its key", e.Kid)
	}
	e.key = ec
	return e, nil
}

// loadSigningKey reads a token signing key, or makes one (0600) if there is none.
func loadSigningKey(file string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		if err := writeSigningKey(file, key); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("token key %s: not PEM", file)
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", file, err)
	}
	return key, nil
}

// writeSigningKey replaces file with key (0600), in one rename.
func writeSigningKey(file string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	tmp := file + ".new"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	return nil
}
