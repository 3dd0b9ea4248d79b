package hierarchy

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// Repository actions a client token can be granted.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
)

var allActions = []string{ActionPull, ActionPush, ActionDelete}

// ScopeRule grants actions on the repositories a pattern selects.
type ScopeRule struct {
	Repository Pattern  `json:"repository"`
	Actions    []string `json:"actions"`
}

// ParseScopeRule reads REPO=ACTIONS as the CLI takes it: "team/*=pull,push".
func ParseScopeRule(s string) (ScopeRule, error) {
	repo, acts, ok := strings.Cut(s, "=")
	if !ok {
		return ScopeRule{}, fmt.Errorf("%w: repository rule %q: want REPOSITORY=ACTIONS, as in team/*=pull,push", ErrInvalid, s)
	}
	r := ScopeRule{Repository: Pattern(repo)}
	for _, a := range strings.Split(acts, ",") {
		r.Actions = append(r.Actions, strings.TrimSpace(a))
	}
	return r, r.Validate()
}

// Validate names a wrong pattern or action.
func (r ScopeRule) Validate() error {
	if err := r.Repository.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(r.Actions) == 0 {
		return fmt.Errorf("%w: repository %q: no actions: use pull, push and/or delete", ErrInvalid, r.Repository)
	}
	for _, a := range r.Actions {
		if !slices.Contains(allActions, a) {
			return fmt.Errorf("%w: repository %q: action %q: must be pull, push or delete", ErrInvalid, r.Repository, a)
		}
	}
	return nil
}

// ScopeMap says what a token may do, repository by repository. Rules add up: a
// repository gets every action of every rule that selects it.
type ScopeMap []ScopeRule

// Validate checks every rule.
func (m ScopeMap) Validate() error {
	if len(m) == 0 {
		return fmt.Errorf("%w: repositories: a token needs at least one REPOSITORY=ACTIONS rule", ErrInvalid)
	}
	for _, r := range m {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Actions lists what may be done on repo.
func (m ScopeMap) Actions(repo string) []string {
	var out []string
	for _, r := range m {
		if !r.Repository.Matches(repo) {
			continue
		}
		for _, a := range r.Actions {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// Put sets the actions of a pattern, replacing its rule if it has one.
func (m ScopeMap) Put(r ScopeRule) ScopeMap {
	for i := range m {
		if m[i].Repository == r.Repository {
			m[i] = r
			return m
		}
	}
	return append(m, r)
}

// scopeOf is what a node's own scope allows: pull, and for a ReadWrite node push and
// delete too (how a sync token's rights are derived).
func scopeOf(s Settings) ScopeMap {
	acts := []string{ActionPull}
	if s.Mode == ReadWrite {
		acts = allActions
	}
	out := make(ScopeMap, 0, len(s.Repositories))
	for _, p := range s.Repositories {
		out = append(out, ScopeRule{Repository: p, Actions: acts})
	}
	return out
}

// ClientToken is a credential for registry clients (docker, skopeo, crane...),
// managed at the root. It works at the root and at the nodes it is bound to
// (Settings.ClientTokens), for what its scope map allows.
type ClientToken struct {
	Name         string    `json:"name"`
	Repositories ScopeMap  `json:"repositories"`
	Enabled      bool      `json:"enabled"`
	Passwords    Passwords `json:"passwords"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

var tokenNameRegexp = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,49}$`)

// ValidateTokenName applies the naming rule, and keeps the names Outpost itself
// uses for sync tokens, the admin and replication free.
func ValidateTokenName(name string) error {
	switch {
	case !tokenNameRegexp.MatchString(name):
		return fmt.Errorf("%w: token name %q: 1 to 50 letters, digits, - and _, starting with a letter", ErrInvalid, name)
	case strings.HasSuffix(name, "-sync"), name == "admin", name == events.ReplicaUser:
		return fmt.Errorf("%w: token name %q is reserved (admin, outpost-internal and *-sync are Outpost's own)", ErrInvalid, name)
	}
	return nil
}

// TokenView is a client token as the API shows it: never its hashes.
type TokenView struct {
	Name         string     `json:"name"`
	Repositories ScopeMap   `json:"repositories"`
	Enabled      bool       `json:"enabled"`
	Password1    *time.Time `json:"password1Created,omitempty"`
	Password2    *time.Time `json:"password2Created,omitempty"`
	Nodes        []string   `json:"nodes"`
	Created      time.Time  `json:"created"`
	Updated      time.Time  `json:"updated"`
	// Password is set only in the answer that created it: it is never shown again.
	Password string `json:"password,omitempty"`
}

func tokenView(t *ClientToken, nodes []string) TokenView {
	v := TokenView{Name: t.Name, Repositories: t.Repositories, Enabled: t.Enabled, Nodes: nodes,
		Created: t.Created, Updated: t.Updated}
	if nodes == nil {
		v.Nodes = []string{}
	}
	if p := t.Passwords.Password1; p != nil {
		v.Password1 = &p.Created
	}
	if p := t.Passwords.Password2; p != nil {
		v.Password2 = &p.Created
	}
	return v
}

// TokenStore keeps client tokens in the node's OUTPOST_TOKENS bucket: all of them at
// the root, those bound to its subtree elsewhere.
type TokenStore struct {
	records[ClientToken]
}

// NewTokenStore wraps an opened bucket.
func NewTokenStore(b *events.Bucket) *TokenStore {
	return &TokenStore{records[ClientToken]{bucket: b, kind: "token", key: func(t *ClientToken) string { return t.Name }}}
}

// Replace makes the store hold exactly tokens (a subtree copy from the parent).
func (s *TokenStore) Replace(ctx context.Context, tokens []*ClientToken) error {
	return s.replace(ctx, tokens, nil)
}
