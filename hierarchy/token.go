package hierarchy

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// SyncToken is a node's credential toward its parent: two passwords, so that one can
// be regenerated while the other still works. Only bcrypt hashes are kept.
type SyncToken struct {
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

// Verify reports whether pw is one of the token's passwords.
func (t SyncToken) Verify(pw string) bool {
	for _, p := range []*PasswordHash{t.Password1, t.Password2} {
		if p != nil && bcrypt.CompareHashAndPassword(p.Hash, []byte(pw)) == nil {
			return true
		}
	}
	return false
}

// SyncTokenName is the user name of a node's sync token.
func SyncTokenName(node string) string { return node + "-sync" }
