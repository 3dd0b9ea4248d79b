package hierarchy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/events"
)

// Store keeps node definitions in the node's OUTPOST_NODES bucket.
type Store struct {
	bucket *events.Bucket
}

// NewStore wraps an opened bucket.
func NewStore(b *events.Bucket) *Store { return &Store{bucket: b} }

// Get reads one node and the revision to update it at.
func (s *Store) Get(ctx context.Context, name string) (*Node, uint64, error) {
	data, rev, err := s.bucket.Get(ctx, name)
	if errors.Is(err, events.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: node %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, err
	}
	var n Node
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, 0, fmt.Errorf("node %s: stored definition: %w", name, err)
	}
	return &n, rev, nil
}

// List reads every node.
func (s *Store) List(ctx context.Context) ([]*Node, error) {
	keys, err := s.bucket.Keys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Node, 0, len(keys))
	for _, k := range keys {
		n, _, err := s.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted while listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Create stores a new node; it fails with ErrConflict if the name is taken.
func (s *Store) Create(ctx context.Context, n *Node) error {
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := s.bucket.Create(ctx, n.Name, data); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: node %s already exists", ErrConflict, n.Name)
	} else if err != nil {
		return err
	}
	return nil
}

// Update stores n if it is still at rev; otherwise ErrConflict (retry with a fresh read).
func (s *Store) Update(ctx context.Context, n *Node, rev uint64) error {
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := s.bucket.Update(ctx, n.Name, data, rev); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: node %s changed meanwhile", ErrConflict, n.Name)
	} else if err != nil {
		return err
	}
	return nil
}

// Put stores n whatever was there (a subtree copy refreshed from the parent).
func (s *Store) Put(ctx context.Context, n *Node) error {
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return s.bucket.Put(ctx, n.Name, data)
}

// Delete removes a node.
func (s *Store) Delete(ctx context.Context, name string) error { return s.bucket.Delete(ctx, name) }
