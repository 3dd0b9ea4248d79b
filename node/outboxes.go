package node

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// outboxes keeps the children's outboxes the gateway opened, to read what waits in
// them for each status report: opening one (create or update its stream and
// consumer) on every report of every child would write the consumer's state each
// time. The first report opens it, so that a new child finds its outbox before the
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

// open returns child's outbox, opened on first use.
func (o *outboxes) open(ctx context.Context, child string) (*events.Outbox, error) {
	name := events.DownstreamOutbox(child)
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

// forget drops child's outbox after a failed read (a deleted child, or unreadable):
// it is opened again next time.
func (o *outboxes) forget(child string) {
	o.mu.Lock()
	delete(o.m, events.DownstreamOutbox(child))
	o.mu.Unlock()
}

// pending is the messages that wait for child.
func (o *outboxes) pending(ctx context.Context, child string) (events.Pending, error) {
	ob, err := o.open(ctx, child)
	if err != nil {
		return events.Pending{}, err
	}
	p, err := ob.Pending(ctx)
	if err != nil {
		o.forget(child)
	}
	return p, err
}
