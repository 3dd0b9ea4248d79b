package hierarchy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Passwords are a token's two passwords (a node's sync token, a client token), so
// that one can be regenerated while the other still works. Only bcrypt hashes are kept.
type Passwords struct {
	Password1 *PasswordHash `json:"password1,omitempty"`
	Password2 *PasswordHash `json:"password2,omitempty"`
}

// PasswordHash is a stored password.
type PasswordHash struct {
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
}

// NewPassword returns a random password, 32 bytes in URL-safe base64.
func NewPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// HashPassword hashes a password for storage.
func HashPassword(pw string, now time.Time) (*PasswordHash, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return &PasswordHash{Hash: h, Created: now}, nil
}

// Verify reports whether pw is one of the token's passwords. A refusal always costs
// two bcrypt compares, an empty slot being checked against a dummy hash, so that a
// wrong password for an existing token takes as long as any password for a token
// that does not exist (the zero Passwords): the time does not tell names apart.
func (t Passwords) Verify(pw string) bool {
	for _, p := range []*PasswordHash{t.Password1, t.Password2} {
		h := dummyHash()
		if p != nil {
			h = p.Hash
		}
		if bcrypt.CompareHashAndPassword(h, []byte(pw)) == nil && p != nil {
			return true
		}
	}
	return false
}

// dummyHash is a hash of a random password nobody knows, at the cost stored hashes have.
var dummyHash = sync.OnceValue(func() []byte {
	pw := make([]byte, 32)
	_, _ = rand.Read(pw)
	h, err := bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)
	if err != nil {
		panic(fmt.Sprintf("bcrypt of 32 random bytes: %v", err)) // cannot fail for this input
	}
	return h
})

// SyncTokenName is the user name of a node's sync token.
func SyncTokenName(node string) string { return node + "-sync" }

// Set replaces password 1 or 2 with a new random one and returns it.
func (t *Passwords) Set(which int, now time.Time) (string, error) {
	if which != 1 && which != 2 {
		return "", fmt.Errorf("%w: password %d: must be 1 or 2", ErrInvalid, which)
	}
	pw, err := NewPassword()
	if err != nil {
		return "", err
	}
	h, err := HashPassword(pw, now)
	if err != nil {
		return "", err
	}
	if which == 1 {
		t.Password1 = h
	} else {
		t.Password2 = h
	}
	return pw, nil
}

// fingerprint changes whenever a password is set or removed, so that a cached
// login never outlives the hash it was checked against.
func (t Passwords) fingerprint() [32]byte {
	h := sha256.New()
	for _, p := range []*PasswordHash{t.Password1, t.Password2} {
		if p != nil {
			h.Write(p.Hash)
		}
		h.Write([]byte{0})
	}
	return [32]byte(h.Sum(nil))
}

// loginCache remembers successful logins for a while: bcrypt is slow on purpose,
// and a registry client may sign in for every request. An entry is good only for
// the same password against the same stored hashes.
type loginCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedLogin
}

type cachedLogin struct {
	sum     [32]byte
	expires time.Time
}

func newLoginCache(ttl time.Duration) *loginCache {
	return &loginCache{ttl: ttl, m: map[string]cachedLogin{}}
}

func (c *loginCache) key(user string, t Passwords, pw string) (string, [32]byte) {
	fp := t.fingerprint()
	return user + "\x00" + string(fp[:]), sha256.Sum256([]byte(pw))
}

// verify checks pw against t, from the cache when it can.
func (c *loginCache) verify(user string, t Passwords, pw string) bool {
	k, sum := c.key(user, t, pw)
	now := time.Now()
	c.mu.Lock()
	e, hit := c.m[k]
	c.mu.Unlock()
	if hit && e.sum == sum && now.Before(e.expires) {
		return true
	}
	if !t.Verify(pw) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 10000 {
		clear(c.m) // bound memory; entries are cheap to rebuild
	}
	c.m[k] = cachedLogin{sum: sum, expires: now.Add(c.ttl)}
	return true
}
