package events

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// KeyChange is one key's new value, or its removal (Deleted).
type KeyChange struct {
	Key      string
	Value    []byte
	Revision uint64
	Deleted  bool
}

// Watch delivers the current value of every key matching pattern (a subject
// wildcard such as "prefix.*"; "" for all keys), then every change, to apply, from
// a goroutine of its own, in the bucket's order, until ctx ends. synced (optional)
// is called once, after the current values: from then on a reader of what apply
// built is at most a change behind. A reader that serves every request from such a
// copy costs one delivery per change instead of a read of every key per request
// (the gateway at a root of many children), and keeps what it learned while the
// bucket does not answer reads (a root tier's failover): JetStream redelivers
// across a leader change.
func (b *Bucket) Watch(ctx context.Context, pattern string, apply func(KeyChange), synced func()) error {
	if pattern == "" {
		pattern = ">"
	}
	w, err := b.kv.Watch(ctx, pattern)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", b.kv.Bucket(), err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the end of the current values
					if initial {
						initial = false
						if synced != nil {
							synced()
						}
					}
					continue
				}
				op := e.Operation()
				apply(KeyChange{Key: e.Key(), Value: e.Value(), Revision: e.Revision(),
					Deleted: op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge})
			}
		}
	}()
	return nil
}
