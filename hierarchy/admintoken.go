package hierarchy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// adminTokenKey is the admin token's hash in the tier's bucket, and where a single
// root kept it in its own OUTPOST_LOCAL before there were tiers.
const adminTokenKey = "admin-token"

// adminTokenRefresh is how long a member trusts its read of the tier's hash.
const adminTokenRefresh = 10 * time.Second

// AdminTokenConfig says where a root member finds the tier's admin token.
type AdminTokenConfig struct {
	// Tier is the OUTPOST_TIER bucket, shared by the root's members. Required.
	Tier *events.Bucket
	// Local is the member's OUTPOST_LOCAL bucket, where a root kept the hash before
	// it was a tier's: it is moved to Tier once. Optional.
	Local *events.Bucket
	// File is DATA/admin-token: written (0600) by the member that makes the token,
	// checked against the tier's hash when present. Required.
	File string
	// Token is the token the operator gave (OUTPOST_ADMIN_TOKEN); it wins over File.
	Token string
	// Notice receives the one line that says where a generated token was written
	// (never the token). Default os.Stderr.
	Notice io.Writer
	Logger *slog.Logger
}

// AdminToken checks tokens against the tier's admin token hash (bcrypt). No member
// needs the token itself: a member started without DATA/admin-token accepts the
// token another member made.
type AdminToken struct {
	tier   *events.Bucket
	logins *loginCache
	log    *slog.Logger

	mu     sync.Mutex
	hash   []byte
	readAt time.Time
}

// SetupAdminToken finds or makes the tier's admin token. The first member makes it
// (the operator's, or a generated one written to File) with a create that only one
// member can win; a root that kept its hash in OUTPOST_LOCAL brings it along. A
// token given to a member (File or Token) must match the tier's.
func SetupAdminToken(ctx context.Context, cfg AdminTokenConfig) (*AdminToken, error) {
	if cfg.Tier == nil || cfg.File == "" {
		return nil, errors.New("admin token: no tier bucket or no file")
	}
	if cfg.Notice == nil {
		cfg.Notice = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	token, source := cfg.Token, "OUTPOST_ADMIN_TOKEN"
	if token == "" {
		if b, err := os.ReadFile(cfg.File); err == nil {
			token, source = strings.TrimSpace(string(b)), cfg.File
		}
	}
	a := &AdminToken{tier: cfg.Tier, logins: newLoginCache(loginCacheTTL), log: cfg.Logger}
	generated := false
	for range 3 {
		hash, _, err := cfg.Tier.Get(ctx, adminTokenKey)
		if err == nil {
			a.hash, a.readAt = hash, time.Now()
			break
		}
		if !errors.Is(err, events.ErrKeyNotFound) {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		// None in the tier yet: a single root's from before, or a new one.
		if cfg.Local != nil {
			if hash, _, err = cfg.Local.Get(ctx, adminTokenKey); err != nil && !errors.Is(err, events.ErrKeyNotFound) {
				return nil, fmt.Errorf("admin token: %w", err)
			}
		}
		if hash == nil {
			if token == "" {
				if token, err = NewPassword(); err != nil {
					return nil, err
				}
				generated, source = true, ""
			}
			h, err := HashPassword(token, time.Now())
			if err != nil {
				return nil, err
			}
			hash = h.Hash
		}
		if err := cfg.Tier.Create(ctx, adminTokenKey, hash); errors.Is(err, events.ErrKeyChanged) {
			// Another member made it first: check against theirs.
			if generated {
				token, generated = "", false
			}
			continue
		} else if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		a.hash, a.readAt = hash, time.Now()
		break
	}
	if a.hash == nil {
		return nil, errors.New("admin token: the tier's keeps changing: try again")
	}
	switch {
	case generated:
		if err := os.WriteFile(cfg.File, []byte(token+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		// Where it is, not what it is: stderr often ends up in a log.
		fmt.Fprintf(cfg.Notice, "Admin token generated: read it from %s (mode 0600)\n", cfg.File)
		cfg.Logger.Info("admin token set", "file", cfg.File, "generated", true)
	case token != "" && !a.Verify(token):
		return nil, fmt.Errorf("admin token: %s does not hold the token of this root tier (its hash is in the %s bucket): give the tier's, or remove %s",
			source, events.BucketTier, cfg.File)
	case token == "":
		cfg.Logger.Info("admin token: the tier's, made by another member; this member has no copy", "file", cfg.File)
	}
	return a, nil
}

// Verify reports whether token is the tier's admin token. Successes are cached for
// a minute against the hash they were checked with.
func (a *AdminToken) Verify(token string) bool {
	return a.logins.verify("admin", Passwords{Password1: &PasswordHash{Hash: a.current()}}, token)
}

// current is the tier's hash, read again at most every adminTokenRefresh; a bucket
// that does not answer leaves the last good read.
func (a *AdminToken) current() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.readAt) > adminTokenRefresh {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if h, _, err := a.tier.Get(ctx, adminTokenKey); err == nil {
			a.hash = h
		} else {
			a.log.Warn("admin token hash not read again", "err", err)
		}
		a.readAt = time.Now()
	}
	return a.hash
}
