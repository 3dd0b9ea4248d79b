package hierarchy

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// WatchedNodes is a copy of the node definitions kept current by a watch on their
// bucket, for the readers that need the whole tree on every request: the gateway
// answers each child's config and status every sync interval, and the router
// routes each event to every child. Reading the bucket for each of those costs a
// read of every definition, so at a root of many children the cost of one request
// grows with the number of children; from the view it is one revision check.
//
// Tree is read-your-writes: it waits for the watch to reach the bucket's revision
// as of the call (normally already there), so a definition changed a moment ago at
// the root is what the next request sees.
type WatchedNodes struct {
	store   *Store
	self    string
	maxWait time.Duration

	mu      sync.Mutex
	nodes   map[string]*Node
	rev     uint64           // the last revision applied
	changed chan struct{}    // closed and replaced at each change
	tree    *Tree            // built from nodes on first use after a change
	bad     map[string]error // definitions that did not decode, until they change
}

// viewMaxWait bounds how long Tree waits for the watch to catch up before it
// reads the bucket itself.
const viewMaxWait = 2 * time.Second

// viewSyncTimeout bounds WatchNodes' wait for the current definitions.
const viewSyncTimeout = 10 * time.Second

// WatchNodes starts a view of store's definitions for the node self; it returns
// once the view holds the bucket's current definitions. It ends with ctx.
func WatchNodes(ctx context.Context, store *Store, self string) (*WatchedNodes, error) {
	v := &WatchedNodes{store: store, self: self, maxWait: viewMaxWait, nodes: map[string]*Node{}, bad: map[string]error{}, changed: make(chan struct{})}
	synced := make(chan struct{})
	if err := store.bucket.Watch(ctx, "", v.apply, func() { close(synced) }); err != nil {
		return nil, err
	}
	t := time.NewTimer(viewSyncTimeout)
	defer t.Stop()
	select {
	case <-synced:
		return v, nil
	case <-t.C:
		return nil, fmt.Errorf("watch node definitions: not synced within %s", viewSyncTimeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("watch node definitions: %w", ctx.Err())
	}
}

func (v *WatchedNodes) apply(c events.KeyChange) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.bad, c.Key)
	delete(v.nodes, c.Key)
	if !c.Deleted {
		var n Node
		if err := json.Unmarshal(c.Value, &n); err != nil {
			v.bad[c.Key] = fmt.Errorf("node %s: stored definition: %w", c.Key, err)
		} else {
			v.nodes[c.Key] = &n
		}
	}
	v.rev = max(v.rev, c.Revision)
	v.tree = nil
	close(v.changed)
	v.changed = make(chan struct{})
}

// Tree is the tree of definitions at least as new as the bucket was when called.
// Callers must not modify the nodes it holds: they are shared.
func (v *WatchedNodes) Tree(ctx context.Context) (*Tree, error) {
	want, err := v.store.Revision(ctx)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(v.maxWait)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		if v.rev >= want {
			defer v.mu.Unlock()
			for _, err := range v.bad {
				return nil, err
			}
			if v.tree == nil {
				list := make([]*Node, 0, len(v.nodes))
				for _, n := range v.nodes {
					list = append(list, n)
				}
				v.tree = NewTree(v.self, ReadOnly, list)
			}
			return v.tree, nil
		}
		changed := v.changed
		v.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			// The watch is stuck (its consumer being recreated): read the bucket.
			nodes, err := v.store.List(ctx)
			if err != nil {
				return nil, err
			}
			return NewTree(v.self, ReadOnly, nodes), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
