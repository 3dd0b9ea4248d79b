package node

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// outboxes keeps the outboxes this node reads what waits in (its children's, for
// each status report, and its own upstream one): opening one (create or update its
// stream and consumer) on every read would write the consumer's state each time.
// A child's first report opens its outbox, so that a new child finds it before the
// first event is routed to it.
type outboxes struct {
	nc   *nats.Conn
	opts []events.OpenOption
	mu   sync.Mutex
	m    map[string]*events.Outbox
}

// newOutboxes opens outboxes with opts (the tier's placement).
func newOutboxes(nc *nats.Conn, opts ...events.OpenOption) *outboxes {
	return &outboxes{nc: nc, opts: opts, m: map[string]*events.Outbox{}}
}

// open returns the outbox name (events.DownstreamOutbox, events.UpstreamOutbox),
// opened on first use. Its TTL is only for appends, which the router makes on an
// outbox of its own.
func (o *outboxes) open(ctx context.Context, name string) (*events.Outbox, error) {
	o.mu.Lock()
	ob := o.m[name]
	o.mu.Unlock()
	if ob != nil {
		return ob, nil
	}
	ob, err := events.OpenOutbox(ctx, o.nc, name, events.DefaultMessageTTL, o.opts...)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.m[name] = ob
	o.mu.Unlock()
	return ob, nil
}

// forget drops an outbox after a failed read (a deleted child, or unreadable): it
// is opened again next time.
func (o *outboxes) forget(name string) {
	o.mu.Lock()
	delete(o.m, name)
	o.mu.Unlock()
}
