package hierarchy

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// SyncerConfig configures a connected node's exchange of settings and status with
// its parent.
type SyncerConfig struct {
	Self   string
	Uplink *Uplink
	// Nodes is the local copy of this node's subtree definitions.
	Nodes *Store
	// Tokens is the local copy of the client tokens bound to the subtree.
	Tokens *TokenStore
	// Webhooks is the local copy of the webhooks this node delivers or relays;
	// nil keeps none.
	Webhooks *WebhookStore
	// Status holds the subtree's statuses, relayed up with this node's own.
	Status *StatusStore
	// Interval is the time between exchanges. Default 2 s.
	Interval time.Duration
	// Apply is called with this node's definition after each config fetch.
	Apply func(ctx context.Context, self *Node)
	// SelfStatus reports this node's own status.
	SelfStatus func(ctx context.Context) Status
	// Fenced is called once when the parent refuses this process (ErrFenced,
	// ErrDeactivated), or its own definition names no or another process; Run
	// then returns. This process must stop moving content.
	Fenced func(err error)
	// OnActivation is called when a child's activation changed in the copy, so that
	// the gateway closes the connections of a process fenced now. Optional.
	OnActivation func(ctx context.Context, node string)
	Logger       *slog.Logger
	// Pending reads what waits here for a direct child (messages, content bytes):
	// relayed fresh with the child's last status, so an offline child still shows
	// it up the tree. Optional.
	Pending func(ctx context.Context, child string) (events.Pending, error)
}

// Syncer pulls settings down and pushes status up, level by level: each node copies
// its subtree from its parent and serves it to its own children.
type Syncer struct {
	cfg SyncerConfig
}

// NewSyncer returns a syncer.
func NewSyncer(cfg SyncerConfig) *Syncer {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	return &Syncer{cfg: cfg}
}

// Run exchanges with the parent every interval until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		err := s.SyncOnce(ctx)
		if IsFenced(err) {
			if s.cfg.Fenced != nil {
				s.cfg.Fenced(err)
			}
			return
		}
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("sync with parent", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SyncOnce fetches settings, applies them, and reports status.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := s.cfg.Uplink.config(ctx)
	if err != nil {
		return err
	}
	nodes, tokens := r.Nodes, r.Tokens
	// The parent answers only the active process; a definition that names no or
	// another process (a parent that does not check) fences this one too.
	if err := CheckInstance(nodes[0], s.cfg.Uplink.instance); err != nil {
		return err
	}
	if err := s.replaceSubtree(ctx, nodes); err != nil {
		return err
	}
	// A token removed, disabled or unbound at the root stops working here now, and
	// stays refused while the parent is out of reach.
	if err := s.cfg.Tokens.Replace(ctx, tokens); err != nil {
		return err
	}
	if s.cfg.Webhooks != nil {
		if err := s.cfg.Webhooks.Replace(ctx, r.Webhooks); err != nil {
			return err
		}
	}
	s.cfg.Apply(ctx, nodes[0])
	statuses := []Status{s.cfg.SelfStatus(ctx)}
	subtree, err := s.cfg.Status.All(ctx, nodes[1:])
	if err != nil {
		return err
	}
	if s.cfg.Pending != nil {
		direct := map[string]bool{}
		for _, n := range nodes[1:] {
			direct[n.Name] = n.Parent == s.cfg.Self
		}
		for i, st := range subtree {
			if direct[st.Node] {
				if p, err := s.cfg.Pending(ctx, st.Node); err == nil {
					subtree[i] = st.WithDownstream(p.Messages, p.Bytes)
				}
			}
		}
	}
	return s.cfg.Uplink.Report(ctx, append(statuses, subtree...))
}

// replaceSubtree makes the local copy exactly what the parent sent.
func (s *Syncer) replaceSubtree(ctx context.Context, nodes []*Node) error {
	old, err := s.cfg.Nodes.List(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	before := map[string]*Node{}
	for _, n := range old {
		before[n.Name] = n
	}
	for _, n := range nodes {
		keep[n.Name] = true
		written, err := s.cfg.Nodes.putNewer(ctx, n)
		if err != nil {
			return err
		}
		if written && n.Parent == s.cfg.Self && ActivationChanged(before[n.Name], n) && s.cfg.OnActivation != nil {
			s.cfg.OnActivation(ctx, n.Name)
		}
	}
	for _, n := range old {
		if !keep[n.Name] {
			if err := s.cfg.Nodes.Delete(ctx, n.Name); err != nil {
				return err
			}
			_ = s.cfg.Status.Delete(ctx, n.Name)
		}
	}
	return nil
}

// IsFenced reports whether err says this process may no longer sync for its node.
func IsFenced(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrDeactivated)
}
