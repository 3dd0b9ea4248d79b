package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/events"
)

// Neighbour is a node this one exchanges content with, as the router sees it.
type Neighbour struct {
	// Name is the neighbour's node name. Events the parent delivered are not sent
	// back to it; events a child delivered are, to confirm the parent's order.
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
// neighbour that should have it. An event is acked in the log only when every
// append is durable.
//
// The parent's order decides: an event goes up only if it did not come down, and it
// goes to every child in scope, the one that delivered it included. That child then
// applies this node's current state, which is a HEAD when nothing came in between,
// and the state that won when another write did: without it, two siblings writing
// one tag at once could keep different digests for good.
type Router struct {
	nc       *nats.Conn
	log      *events.Log
	topology Topology
	logger   *slog.Logger
	ledger   *Ledger
	appender *events.Appender

	mu       sync.Mutex
	outboxes map[string]*events.Outbox
}

// NewRouter returns a router over the node's log.
func NewRouter(nc *nats.Conn, log *events.Log, topology Topology, logger *slog.Logger) *Router {
	return &Router{nc: nc, log: log, topology: topology, logger: logger, outboxes: map[string]*events.Outbox{}}
}

// SetLedger makes the router show the node's log, in order, to the ledger that
// finds overwritten writes. Call it before Run.
func (r *Router) SetLedger(l *Ledger) { r.ledger = l }

// Run routes until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	q, err := r.log.Consume(ctx)
	if err != nil {
		return err
	}
	if r.appender, err = events.NewAppender(r.nc); err != nil {
		return err
	}
	if next, err := q.NextSequence(ctx); err == nil {
		r.ledger.Routed(next - 1)
	}
	retry := newRetry()
	for ctx.Err() == nil {
		d, err := q.Next(ctx, time.Second)
		if err != nil {
			r.logger.Warn("router: read event log", "err", err)
			Sleep(ctx, retry.Next())
			continue
		}
		if d == nil {
			continue
		}
		if err := r.route(ctx, d.Event); err != nil {
			r.logger.Warn("router: append to outbox", "event", d.Event.ID, "err", err)
			_ = d.Retry(retry.Next())
			continue
		}
		r.ledger.Observe(d.Event)
		if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("router: ack", "event", d.Event.ID, "err", err)
			continue
		}
		retry.Reset()
	}
	return nil
}

func (r *Router) route(ctx context.Context, e *events.Event) error {
	ns, err := r.topology.Neighbours(ctx)
	if err != nil {
		return err
	}
	var to []Neighbour
	for _, n := range ns {
		if n.Matches(e.Repository) && !(n.upstream() && e.From == n.Name) {
			to = append(to, n)
		}
	}
	// An outbox not opened yet by this process (its first event since the start, or a
	// new child) is opened now; several at once, as each open is a round trip or two.
	obs := make([]*events.Outbox, len(to))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(openJobs)
	for i, n := range to {
		g.Go(func() (err error) {
			obs[i], err = r.outbox(gctx, n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	targets := make([]events.AppendTarget, len(to))
	for i, n := range to {
		targets[i] = events.AppendTarget{Outbox: obs[i], Key: e.ID + "." + n.Name}
	}
	// Pipelined: one round trip per child in turn would hold the last child's copy
	// back by all of them.
	return r.appender.Append(ctx, e, targets)
}

// upstream says whether the neighbour is the parent.
func (n Neighbour) upstream() bool { return n.Outbox == events.UpstreamOutbox() }

// openJobs is how many outboxes the router opens at once.
const openJobs = 16

func (r *Router) outbox(ctx context.Context, n Neighbour) (*events.Outbox, error) {
	key := n.Outbox + "/" + n.TTL.String()
	r.mu.Lock()
	ob, ok := r.outboxes[key]
	r.mu.Unlock()
	if ok {
		return ob, nil
	}
	ob, err := events.OpenOutbox(ctx, r.nc, n.Outbox, n.TTL, events.WithPlacement(r.log.Placement()))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.outboxes[key] = ob
	r.mu.Unlock()
	return ob, nil
}
