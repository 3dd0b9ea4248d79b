package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// Neighbour is a node this one exchanges content with, as the router sees it.
type Neighbour struct {
	// Name is the neighbour's node name; events it delivered are not sent back.
	Name string
	// Outbox is the stream its events wait in.
	Outbox string
	// Matches says whether a repository lies in what the link carries.
	Matches func(repo string) bool
	// TTL is how long a message waits for the neighbour.
	TTL time.Duration
}

// Topology says where this node's events go right now: its parent (if it sends
// upstream) and its children.
type Topology interface {
	Neighbours(ctx context.Context) ([]Neighbour, error)
}

// Router reads the node's event log and appends each event to the outbox of every
// neighbour that should have it, never back to the one it came from. An event is
// acked in the log only when every append is durable.
type Router struct {
	nc       *nats.Conn
	log      *events.Log
	topology Topology
	logger   *slog.Logger

	mu       sync.Mutex
	outboxes map[string]*events.Outbox
}

// NewRouter returns a router over the node's log.
func NewRouter(nc *nats.Conn, log *events.Log, topology Topology, logger *slog.Logger) *Router {
	return &Router{nc: nc, log: log, topology: topology, logger: logger, outboxes: map[string]*events.Outbox{}}
}

// Run routes until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	q, err := r.log.Consume(ctx)
	if err != nil {
		return err
	}
	retry := newRetry()
	for ctx.Err() == nil {
		d, err := q.Next(ctx, time.Second)
		if err != nil {
			r.logger.Warn("router: read event log", "err", err)
			sleep(ctx, retry.next())
			continue
		}
		if d == nil {
			continue
		}
		if err := r.route(ctx, d.Event); err != nil {
			r.logger.Warn("router: append to outbox", "event", d.Event.ID, "err", err)
			_ = d.Retry(retry.next())
			continue
		}
		if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("router: ack", "event", d.Event.ID, "err", err)
			continue
		}
		retry.reset()
	}
	return nil
}

func (r *Router) route(ctx context.Context, e *events.Event) error {
	ns, err := r.topology.Neighbours(ctx)
	if err != nil {
		return err
	}
	for _, n := range ns {
		if n.Name == e.From || !n.Matches(e.Repository) {
			continue
		}
		ob, err := r.outbox(ctx, n)
		if err != nil {
			return err
		}
		if err := ob.Append(ctx, e, e.ID+"."+n.Name); err != nil {
			return err
		}
	}
	return nil
}

func (r *Router) outbox(ctx context.Context, n Neighbour) (*events.Outbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := n.Outbox + "/" + n.TTL.String()
	if ob, ok := r.outboxes[key]; ok {
		return ob, nil
	}
	ob, err := events.OpenOutbox(ctx, r.nc, n.Outbox, n.TTL)
	if err != nil {
		return nil, err
	}
	r.outboxes[key] = ob
	return ob, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
