package hierarchy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Grant is what a credential may do at this node.
type Grant struct {
	// User is the name it signed in with.
	User string
	// Child is set for a direct child's sync token: its writes are replicas.
	Child string
	// Below lists the nodes under Child (as this node knows them): the only other
	// places a change it passes on may have been made.
	Below []string
	// Admin may do anything (the root's admin token).
	Admin bool
	// Scope lists the repository actions allowed; unused for Admin.
	Scope ScopeMap
	// Fence, for a child's sync token, refuses every process instance but the one
	// active for the child (ErrDeactivated, ErrFenced).
	Fence func(instance string) error
}

// ErrLogin is a refused login: an unknown user or a wrong password. The message
// never says which, nor repeats the password.
var ErrLogin = errors.New("unknown user or wrong password")

// ErrUnavailable is a login that could not be checked: the node's stores did not
// answer (a JetStream leader change in a root tier) and no recent read stands in.
// The client should try again; it is not a failed login.
var ErrUnavailable = errors.New("access rules unavailable")

// Access says who may use a node's registry: the client tokens bound to it (every
// enabled token at the root), its direct children's sync tokens (for their own scope;
// push and delete only for a ReadWrite child) and, at the root, the admin token. It
// reads the node's local copies, so it keeps working while the parent is out of
// reach, and a token removed at the root stops working here at the next sync.
type Access struct {
	cfg    AccessConfig
	logins *loginCache

	mu     sync.Mutex
	snap   *accessSnapshot
	loaded time.Time // when snap was last read, or last stood in for a failed read
	read   time.Time // when snap was last read
}

// AccessConfig configures Access.
type AccessConfig struct {
	Self   string
	Root   bool
	Nodes  *Store
	Tokens *TokenStore
	// IsAdmin checks the admin token; nil except at the root.
	IsAdmin func(password string) bool
	// RootAnonymousPull is the root's own setting (a flag; other nodes have theirs
	// in their definition).
	RootAnonymousPull bool
}

type accessSnapshot struct {
	self     *Node // nil at the root
	children map[string]*Node
	parents  map[string]string // every node known here, by name
	tokens   map[string]*ClientToken
	// standIn: a read kept while the stores do not answer. It may predate a token
	// or a sync password made since, so it grants but never refuses credentials
	// (that would count as a failed login): see refuse.
	standIn bool
}

// refuse is ErrLogin, or ErrUnavailable when s is a stand-in read.
func (s *accessSnapshot) refuse(user string) error {
	if s.standIn {
		return fmt.Errorf("%w: %s is not in the last read of the access rules, which stands in while the stores do not answer", ErrUnavailable, user)
	}
	return ErrLogin
}

// below lists the nodes under name, nearest first.
func (s *accessSnapshot) below(name string) []string {
	var out []string
	for next := []string{name}; len(next) > 0; {
		var level []string
		for n, p := range s.parents {
			if slices.Contains(next, p) && !slices.Contains(out, n) && n != name {
				level = append(level, n)
			}
		}
		slices.Sort(level)
		out = append(out, level...)
		next = level
	}
	return out
}

// snapshotTTL bounds how stale Access's view of the stores can be.
const snapshotTTL = time.Second

// staleLimit is how long the last read stands in while the stores do not answer:
// in a root tier a member's buckets elect a new leader for a few seconds after
// another member dies, and logins (sites' copies among them) go on meanwhile.
// A change made at another member in that time applies here once a read works.
const staleLimit = 30 * time.Second

// NewAccess returns the access rules of a node.
func NewAccess(cfg AccessConfig) *Access {
	return &Access{cfg: cfg, logins: newLoginCache(loginCacheTTL)}
}

func (a *Access) snapshot() (*accessSnapshot, error) { return a.load(snapshotTTL) }

// fresher reloads a snapshot older than a moment: a name just created at the root
// (or just synced here) must not wait out snapshotTTL.
func (a *Access) fresher() (*accessSnapshot, error) { return a.load(200 * time.Millisecond) }

func (a *Access) load(maxAge time.Duration) (*accessSnapshot, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.snap != nil && time.Since(a.loaded) < maxAge {
		return a.snap, nil
	}
	// With a recent read to fall back on, a store that does not answer holds
	// logins (a.mu) for a second, not five.
	stale := a.snap != nil && time.Since(a.read) < staleLimit
	timeout := 5 * time.Second
	if stale {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nodes, err := a.cfg.Nodes.List(ctx)
	if err != nil {
		return a.standIn(fmt.Errorf("read node definitions: %w", err), stale)
	}
	tokens, err := a.cfg.Tokens.List(ctx)
	if err != nil {
		return a.standIn(fmt.Errorf("read client tokens: %w", err), stale)
	}
	s := &accessSnapshot{children: map[string]*Node{}, parents: map[string]string{}, tokens: map[string]*ClientToken{}}
	for _, n := range nodes {
		s.parents[n.Name] = n.Parent
		switch {
		case n.Name == a.cfg.Self:
			s.self = n
		case n.Parent == a.cfg.Self:
			s.children[n.Name] = n
		}
	}
	for _, t := range tokens {
		s.tokens[t.Name] = t
	}
	a.snap, a.loaded, a.read = s, time.Now(), time.Now()
	return s, nil
}

// AccessRefresh is how often KeepFresh reads the stores: well inside staleLimit.
const AccessRefresh = 10 * time.Second

// KeepFresh reads the stores every interval until ctx ends, so that a member of a
// root tier that served no logins of late still has a read recent enough to stand
// in (staleLimit) when another member dies and the sites' logins move to it while
// the buckets elect new leaders.
func (a *Access) KeepFresh(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_, _ = a.snapshot()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// standIn answers a failed read with the last one while it is recent (tried again
// after snapshotTTL), else with ErrUnavailable.
func (a *Access) standIn(err error, stale bool) (*accessSnapshot, error) {
	if stale {
		if !a.snap.standIn {
			cp := *a.snap
			cp.standIn = true
			a.snap = &cp
		}
		a.loaded = time.Now()
		return a.snap, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// AnonymousPull reports whether clients without credentials may pull here.
func (a *Access) AnonymousPull() bool {
	if a.cfg.Root {
		return a.cfg.RootAnonymousPull
	}
	s, err := a.snapshot()
	return err == nil && s.self != nil && s.self.Settings.AnonymousPull
}

// Login checks a user name and password.
func (a *Access) Login(user, password string) (Grant, error) {
	return a.grant(user, &password)
}

// Lookup re-checks a user this node issued a registry token to: it fails once the
// credential no longer works here (deleted, disabled, unbound, child removed).
func (a *Access) Lookup(user string) (Grant, error) {
	return a.grant(user, nil)
}

// fence checks a process instance against child's activation; a refusal is checked
// again on a fresher snapshot, as the process may have just activated.
func (a *Access) fence(child *Node) func(instance string) error {
	return func(instance string) error {
		err := CheckInstance(child, instance)
		if err == nil {
			return nil
		}
		if s, serr := a.fresher(); serr == nil {
			if c, ok := s.children[child.Name]; ok {
				return CheckInstance(c, instance)
			}
		}
		return err
	}
}

func (a *Access) grant(user string, password *string) (Grant, error) {
	if user == "admin" && a.cfg.IsAdmin != nil {
		if password != nil && !a.cfg.IsAdmin(*password) {
			return Grant{}, ErrLogin
		}
		return Grant{User: user, Admin: true}, nil
	}
	s, err := a.snapshot()
	if err != nil {
		return Grant{}, err
	}
	if _, known := s.tokens[user]; !known {
		if s, err = a.fresher(); err != nil {
			return Grant{}, err
		}
	}
	if name, ok := strings.CutSuffix(user, "-sync"); ok {
		c, ok := s.children[name]
		var pws Passwords // unknown: checked against nothing, at the same cost (Passwords.Verify)
		if ok {
			pws = c.SyncToken
		}
		if (password != nil && !a.logins.verify(user, pws, *password)) || !ok {
			return Grant{}, s.refuse(user)
		}
		return Grant{User: user, Child: name, Below: s.below(name), Scope: scopeOf(c.Settings), Fence: a.fence(c)}, nil
	}
	t, ok := s.tokens[user]
	var pws Passwords
	if ok {
		pws = t.Passwords
	}
	if (password != nil && !a.logins.verify(user, pws, *password)) || !ok {
		return Grant{}, s.refuse(user)
	}
	switch {
	case !t.Enabled:
		return Grant{}, fmt.Errorf("token %s is disabled", user)
	case !a.cfg.Root && (s.self == nil || !slices.Contains(s.self.Settings.ClientTokens, user)):
		return Grant{}, fmt.Errorf("token %s is not bound to node %s (outpost node update %s --add-client-tokens %s, at the root)", user, a.cfg.Self, a.cfg.Self, user)
	}
	return Grant{User: user, Scope: t.Repositories}, nil
}
