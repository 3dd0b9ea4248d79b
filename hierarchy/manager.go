package hierarchy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// Manager is the root's authority over the tree: every change to a node definition
// goes through it, one at a time.
type Manager struct {
	store         *Store
	tokens        *TokenStore
	status        *StatusStore
	root          string
	rootMode      Mode
	rootEndpoints Endpoints
	now           func() time.Time
	onActivation  func(ctx context.Context, node string)
	// beforeWrite, in tests, runs after a write's decision and before its
	// compare-and-set: another member's write can be put there.
	beforeWrite func(op, name string)
	pending     func(ctx context.Context, child string) (events.Pending, error)

	// mu orders this member's writes; other members' are ordered by the
	// compare-and-set each write ends with (retry).
	mu sync.Mutex
}

// writeAttempts bounds how often a management write starts again from fresh state
// after losing its compare-and-set to another root member.
const writeAttempts = 8

// retry runs one management write, again from fresh state each time it loses a
// compare-and-set (ErrChanged): when two members write at once both writes land,
// one after the other, or after writeAttempts the caller gets the conflict (409),
// never a silent loss.
func (m *Manager) retry(ctx context.Context, write func() error) error {
	var err error
	for i := range writeAttempts {
		if err = write(); !errors.Is(err, ErrChanged) {
			return err
		}
		select { // jittered, so that two members do not meet again at once
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Duration(1+rand.IntN(10)) * time.Millisecond):
		}
	}
	return fmt.Errorf("%w (tried %d times while other root members kept writing: try again)", err, writeAttempts)
}

func (m *Manager) hook(op, name string) {
	if m.beforeWrite != nil {
		m.beforeWrite(op, name)
	}
}

// treeAt reads the whole tree and the nodes bucket's revision it was read at.
func (m *Manager) treeAt(ctx context.Context) (*Tree, uint64, error) {
	rev, err := m.store.Revision(ctx)
	if err != nil {
		return nil, 0, err
	}
	t, err := m.Tree(ctx)
	return t, rev, err
}

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	Store     *Store
	Tokens    *TokenStore
	Status    *StatusStore
	Root      string    // the root's name
	RootMode  Mode      // the root's own mode
	Endpoints Endpoints // where the root's children reach it
	Now       func() time.Time
	// OnActivation is called after a node was activated or deactivated, so that the
	// gateway closes the connections of a process that is fenced now. Optional.
	OnActivation func(ctx context.Context, node string)
	// Pending reads what waits at the root for a direct child, so that listings
	// show it now, not as of the child's last report (an offline child's stays).
	// Optional.
	Pending func(ctx context.Context, child string) (events.Pending, error)
}

// NewManager returns the root's manager.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{store: cfg.Store, tokens: cfg.Tokens, status: cfg.Status, root: cfg.Root, rootMode: cfg.RootMode,
		rootEndpoints: cfg.Endpoints, now: cfg.Now, onActivation: cfg.OnActivation, pending: cfg.Pending}
}

// Tree reads the whole tree.
func (m *Manager) Tree(ctx context.Context) (*Tree, error) {
	nodes, err := m.store.List(ctx)
	if err != nil {
		return nil, err
	}
	return NewTree(m.root, m.rootMode, nodes), nil
}

// Create defines a node. An empty parent means the root.
func (m *Manager) Create(ctx context.Context, name, parent string, s Settings) (*Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if parent == "" {
		parent = m.root
	}
	s.Defaults()
	now := m.now().UTC()
	n := &Node{Name: name, Parent: parent, Settings: s, Created: now, Updated: now}
	// The whole tree's revision: a parent deleted or narrowed by another member
	// since this read makes the write fail, and the checks run again.
	err := m.retry(ctx, func() error {
		t, rev, err := m.treeAt(ctx)
		if err != nil {
			return err
		}
		if err := t.CheckCreate(n); err != nil {
			return err
		}
		if err := m.checkTokensExist(ctx, s.ClientTokens, nil); err != nil {
			return err
		}
		m.hook("create", name)
		return m.store.PutAt(ctx, n, rev)
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Update applies change to a node's settings under the tree's rules.
func (m *Manager) Update(ctx context.Context, name string, change func(*Settings) error) (*Node, error) {
	return m.modify(ctx, name, true, func(t *Tree, n *Node) error {
		old := *n
		old.Settings.ClientTokens = slices.Clone(n.Settings.ClientTokens)
		if err := change(&n.Settings); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if err := m.checkTokensExist(ctx, n.Settings.ClientTokens, old.Settings.ClientTokens); err != nil {
			return err
		}
		return t.CheckUpdate(&old, n)
	})
}

// checkTokensExist refuses to bind a client token that does not exist: the binding
// would hand the node whatever token is created under that name later. Names in
// already are bound already and are not checked again (removing them stays possible).
func (m *Manager) checkTokensExist(ctx context.Context, names, already []string) error {
	for _, name := range names {
		if slices.Contains(already, name) {
			continue
		}
		if _, _, err := m.tokens.Get(ctx, name); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: client token %q does not exist: create it first with `outpost token create %s`", ErrInvalid, name, name)
		} else if err != nil {
			return fmt.Errorf("client token %q: %w", name, err)
		}
	}
	return nil
}

// modify reads a node, changes it and writes it back if nothing it was decided on
// changed meanwhile, else starts again from fresh state. A change that checks the
// tree's rules (whole) gets the tree and is compared with the whole bucket's
// revision; any other only with the node's own, and gets no tree.
func (m *Manager) modify(ctx context.Context, name string, whole bool, change func(*Tree, *Node) error) (*Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out *Node
	err := m.retry(ctx, func() error {
		var t *Tree
		var bucketRev uint64
		var err error
		if whole {
			if t, bucketRev, err = m.treeAt(ctx); err != nil {
				return err
			}
		}
		n, rev, err := m.store.Get(ctx, name)
		if err != nil {
			return err
		}
		if err := change(t, n); err != nil {
			return err
		}
		n.Updated = m.now().UTC()
		m.hook("modify", name)
		if whole {
			err = m.store.UpdateAt(ctx, n, bucketRev, rev)
		} else {
			err = m.store.Update(ctx, n, rev)
		}
		out = n
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Delete removes a node without children.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.retry(ctx, func() error {
		t, rev, err := m.treeAt(ctx)
		if err != nil {
			return err
		}
		if err := t.CheckDelete(name); err != nil {
			return err
		}
		m.hook("delete", name)
		return m.store.DeleteAt(ctx, name, rev)
	})
	if err != nil {
		return err
	}
	return m.status.Delete(ctx, name)
}

// Deactivate frees a node definition for another process. The process that ran it
// is fenced: its parent refuses it from now on, and it stops moving content at its
// next sync.
func (m *Manager) Deactivate(ctx context.Context, name string) (*Node, error) {
	n, err := m.modify(ctx, name, false, func(_ *Tree, n *Node) error {
		n.Activation = nil
		return nil
	})
	if err == nil && m.onActivation != nil {
		m.onActivation(ctx, name)
	}
	return n, err
}

// Resync asks a node to reconcile its whole scope at its next contact.
func (m *Manager) Resync(ctx context.Context, name string) (*Node, error) {
	return m.modify(ctx, name, false, func(_ *Tree, n *Node) error {
		n.ResyncGeneration++
		return nil
	})
}

// Activate marks a node Active for one process instance; a node Active for another
// instance is refused until it is deactivated. A process restarting on the same data
// directory keeps its instance and is let back in. It returns the definition as
// stored, for the parents that relayed the request to record.
func (m *Manager) Activate(ctx context.Context, name, instance string, ep Endpoints) (*Node, error) {
	if instance == "" {
		return nil, fmt.Errorf("%w: activate %s: the process sent no instance id", ErrInvalid, name)
	}
	n, err := m.modify(ctx, name, false, func(_ *Tree, n *Node) error {
		if n.Activation != nil && n.Activation.Instance != instance {
			return &RefusedError{Code: ErrAlreadyActivated, Message: fmt.Sprintf(
				"ALREADY_ACTIVATED: node %s is active in another process since %s; run `outpost node deactivate %s` at the root first",
				name, n.Activation.Time.Format(time.RFC3339), name)}
		}
		n.Activation = &Activation{Instance: instance, Time: m.now().UTC()}
		n.Endpoints = ep
		return nil
	})
	if err != nil {
		return nil, err
	}
	if m.onActivation != nil {
		m.onActivation(ctx, name)
	}
	return n, nil
}

// Settings makes a node's connection string. generate 1 or 2 replaces that password
// and prints it; 0 makes password 1 if the node has none yet.
func (m *Manager) Settings(ctx context.Context, name string, generate int) (ConnectionString, error) {
	var pw string
	var parentEP Endpoints
	n, err := m.modify(ctx, name, true, func(t *Tree, n *Node) error {
		if n.Parent == m.root {
			parentEP = m.rootEndpoints
		} else if p, ok := t.Get(n.Parent); ok {
			parentEP = p.Endpoints
		}
		if parentEP.Gateway == "" || parentEP.Registry == "" {
			return fmt.Errorf("%w: parent %s has not activated yet, so its endpoints are unknown: start it first", ErrConflict, n.Parent)
		}
		which := generate // decided again on each attempt's fresh read
		switch {
		case which == 0 && n.SyncToken.Password1 == nil && n.SyncToken.Password2 == nil:
			which = 1
		case which == 0:
			return fmt.Errorf("%w: sync token passwords are stored only as hashes: pass --generate-password 1 or 2 to make a new one (the other keeps working)", ErrInvalid)
		}
		var err error
		pw, err = n.SyncToken.Set(which, m.now().UTC())
		return err
	})
	if err != nil {
		return ConnectionString{}, err
	}
	proto := parentEP.Protocol
	if proto == "" {
		proto = "http"
	}
	return ConnectionString{NodeName: n.Name, SyncTokenName: SyncTokenName(n.Name), SyncTokenPassword: pw,
		ParentGateway: parentEP.Gateway, ParentProtocol: proto, ParentRegistry: parentEP.Registry}, nil
}

// Statuses returns the last status of every node, aged: a node silent for
// staleAfter is Offline.
func (m *Manager) Statuses(ctx context.Context, staleAfter time.Duration) (map[string]Status, error) {
	t, err := m.Tree(ctx)
	if err != nil {
		return nil, err
	}
	all, err := m.status.All(ctx, t.Nodes())
	if err != nil {
		return nil, err
	}
	out := map[string]Status{}
	for _, st := range all {
		st = st.Seen(m.now(), staleAfter)
		if n, ok := t.Get(st.Node); ok && n.Parent == m.root && m.pending != nil {
			if p, err := m.pending(ctx, st.Node); err == nil {
				st = st.WithDownstream(p.Messages, p.Bytes)
			}
		}
		out[st.Node] = st
	}
	return out, nil
}

// CreateToken defines a client token, enabled, with a new password 1 that the
// caller shows once.
func (m *Manager) CreateToken(ctx context.Context, name string, scope ScopeMap) (*ClientToken, string, error) {
	if err := ValidateTokenName(name); err != nil {
		return nil, "", err
	}
	if err := scope.Validate(); err != nil {
		return nil, "", err
	}
	now := m.now().UTC()
	t := &ClientToken{Name: name, Repositories: scope, Enabled: true, Created: now, Updated: now}
	pw, err := t.Passwords.Set(1, now)
	if err != nil {
		return nil, "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// A binding left from before deletes unbound first would hand the new token to
	// nodes nobody bound it to now.
	if nodes, err := m.TokenNodes(ctx, name); err != nil {
		return nil, "", err
	} else if len(nodes) > 0 {
		return nil, "", fmt.Errorf("%w: client token %q: node(s) %s still name it, left from an earlier token: remove it there first with `outpost node update %s --remove-client-tokens %s`",
			ErrConflict, name, strings.Join(nodes, ", "), nodes[0], name)
	}
	if err := m.tokens.Create(ctx, t); err != nil {
		return nil, "", err
	}
	return t, pw, nil
}

// UpdateToken applies change to a client token and checks the result.
func (m *Manager) UpdateToken(ctx context.Context, name string, change func(*ClientToken) error) (*ClientToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out *ClientToken
	err := m.retry(ctx, func() error {
		t, rev, err := m.tokens.Get(ctx, name)
		if err != nil {
			return err
		}
		if err := change(t); err != nil {
			return err
		}
		if err := t.Repositories.Validate(); err != nil {
			return err
		}
		t.Updated = m.now().UTC()
		m.hook("token", name)
		out = t
		return m.tokens.Update(ctx, t, rev)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TokenPassword replaces password 1 or 2 of a client token and returns it; the other
// keeps working, for rotation without a gap.
func (m *Manager) TokenPassword(ctx context.Context, name string, which int) (string, error) {
	var pw string
	_, err := m.UpdateToken(ctx, name, func(t *ClientToken) error {
		var err error
		pw, err = t.Passwords.Set(which, m.now().UTC())
		return err
	})
	return pw, err
}

// DeleteToken unbinds a client token from every node, then removes it; each node
// stops accepting it at its next sync. Unbinding comes first, under the manager's
// lock: a failure leaves the token in place (delete it again), never a binding
// without its token, which a token created later under that name would inherit.
func (m *Manager) DeleteToken(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, _, err := m.tokens.Get(ctx, name); err != nil {
		return err
	}
	nodes, err := m.TokenNodes(ctx, name)
	if err != nil {
		return err
	}
	for _, node := range nodes {
		err := m.retry(ctx, func() error {
			n, rev, err := m.store.Get(ctx, node)
			if err != nil {
				return err
			}
			n.Settings.ClientTokens = slices.DeleteFunc(n.Settings.ClientTokens, func(s string) bool { return s == name })
			n.Updated = m.now().UTC()
			return m.store.Update(ctx, n, rev)
		})
		if err != nil {
			return fmt.Errorf("unbind token %s from node %s: %w (the token is not deleted: delete it again)", name, node, err)
		}
	}
	return m.tokens.Delete(ctx, name)
}

// Tokens lists the client tokens.
func (m *Manager) Tokens(ctx context.Context) ([]*ClientToken, error) { return m.tokens.List(ctx) }

// Token reads one client token.
func (m *Manager) Token(ctx context.Context, name string) (*ClientToken, error) {
	t, _, err := m.tokens.Get(ctx, name)
	return t, err
}

// TokenNodes lists the nodes a client token is bound to.
func (m *Manager) TokenNodes(ctx context.Context, name string) ([]string, error) {
	nodes, err := m.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes {
		if slices.Contains(n.Settings.ClientTokens, name) {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}
