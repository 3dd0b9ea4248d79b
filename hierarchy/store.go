package hierarchy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/events"
)

// ErrChanged is a write that lost a compare-and-set: what it was decided on changed
// meanwhile (another root member wrote first). It is an ErrConflict (409); the
// Manager tries again from fresh state before it gives up.
var ErrChanged = fmt.Errorf("%w: changed meanwhile", ErrConflict)

// records keeps JSON values of one kind in a bucket, keyed by their names.
type records[T any] struct {
	bucket *events.Bucket
	kind   string // "node", "token": for error messages
	key    func(*T) string
}

// Get reads one record and the revision to update it at.
func (s *records[T]) Get(ctx context.Context, name string) (*T, uint64, error) {
	data, rev, err := s.bucket.Get(ctx, name)
	if errors.Is(err, events.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %s %s", ErrNotFound, s.kind, name)
	}
	if err != nil {
		return nil, 0, err
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, 0, fmt.Errorf("%s %s: stored definition: %w", s.kind, name, err)
	}
	return &v, rev, nil
}

// listReads is how many records List reads at once. In a cluster each read is a
// round trip to the bucket's leader (events.Bucket): read one after another, 850
// node definitions took over a second on a loaded tier, and the access rules, which
// give a read a second while an older one stands in, stayed stale (a child's first
// registry request was refused as deactivated for 5 s after its activation).
const listReads = 32

// List reads every record.
func (s *records[T]) List(ctx context.Context) ([]*T, error) {
	keys, err := s.bucket.Keys(ctx)
	if err != nil {
		return nil, err
	}
	vals := make([]*T, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listReads)
	for i, k := range keys {
		g.Go(func() error {
			v, _, err := s.Get(gctx, k)
			if errors.Is(err, ErrNotFound) {
				return nil // deleted while listing
			}
			vals[i] = v
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(keys))
	for _, v := range vals {
		if v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// Create stores a new record; it fails with ErrConflict if the name is taken.
func (s *records[T]) Create(ctx context.Context, v *T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.bucket.Create(ctx, s.key(v), data); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: %s %s already exists", ErrConflict, s.kind, s.key(v))
	} else if err != nil {
		return err
	}
	return nil
}

// Update stores v if it is still at rev; otherwise ErrChanged (retry with a fresh read).
func (s *records[T]) Update(ctx context.Context, v *T, rev uint64) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.bucket.Update(ctx, s.key(v), data, rev); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: %s %s", ErrChanged, s.kind, s.key(v))
	} else if err != nil {
		return err
	}
	return nil
}

// Revision is the revision of the whole bucket, for PutAt and DeleteAt: read it
// before the records a decision rests on.
func (s *records[T]) Revision(ctx context.Context) (uint64, error) { return s.bucket.Revision(ctx) }

// replace makes the store hold exactly vals (a copy from the parent), those that
// keep accepts (nil: all): a record unchanged is not written again at every sync,
// one no longer sent is deleted.
func (s *records[T]) replace(ctx context.Context, vals []*T, keep func(*T) bool) error {
	old, err := s.List(ctx)
	if err != nil {
		return err
	}
	stored := map[string]*T{}
	for _, v := range old {
		stored[s.key(v)] = v
	}
	sent := map[string]bool{}
	for _, v := range vals {
		if keep != nil && !keep(v) {
			continue
		}
		sent[s.key(v)] = true
		if cur := stored[s.key(v)]; cur != nil && sameJSON(cur, v) {
			continue
		}
		if err := s.Put(ctx, v); err != nil {
			return err
		}
	}
	for _, v := range old {
		if !sent[s.key(v)] {
			if err := s.Delete(ctx, s.key(v)); err != nil {
				return err
			}
		}
	}
	return nil
}

// PutAt stores v if no record changed since the bucket's revision rev;
// otherwise ErrChanged.
func (s *records[T]) PutAt(ctx context.Context, v *T, rev uint64) error {
	return s.UpdateAt(ctx, v, rev, 0) // 0: no condition on v's own record
}

// UpdateAt stores v if no record changed since the bucket's revision rev and v's
// own record is still at keyRev; otherwise ErrChanged.
func (s *records[T]) UpdateAt(ctx context.Context, v *T, rev, keyRev uint64) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.bucket.UpdateAt(ctx, s.key(v), data, rev, keyRev); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: the %ss, writing %s %s", ErrChanged, s.kind, s.kind, s.key(v))
	} else if err != nil {
		return err
	}
	return nil
}

// DeleteAt removes a record if no record changed since the bucket's revision rev;
// otherwise ErrChanged.
func (s *records[T]) DeleteAt(ctx context.Context, name string, rev uint64) error {
	if err := s.bucket.DeleteAt(ctx, name, rev); errors.Is(err, events.ErrKeyChanged) {
		return fmt.Errorf("%w: the %ss, deleting %s %s", ErrChanged, s.kind, s.kind, name)
	} else if err != nil {
		return err
	}
	return nil
}

// Put stores v whatever was there (a subtree copy refreshed from the parent).
func (s *records[T]) Put(ctx context.Context, v *T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.bucket.Put(ctx, s.key(v), data)
}

// Delete removes a record.
func (s *records[T]) Delete(ctx context.Context, name string) error {
	return s.bucket.Delete(ctx, name)
}

// Store keeps node definitions in the node's OUTPOST_NODES bucket.
type Store struct {
	records[Node]
}

// NewStore wraps an opened bucket.
func NewStore(b *events.Bucket) *Store {
	return &Store{records[Node]{bucket: b, kind: "node", key: func(n *Node) string { return n.Name }}}
}
