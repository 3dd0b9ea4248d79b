package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// LinkConfig configures a connected node's link to its parent.
type LinkConfig struct {
	// Self and Parent are the two ends' node names.
	Self, Parent string
	// ParentConn is the connection to the parent's gateway, logged in as Self.
	ParentConn *nats.Conn
	// LocalConn is the node's own NATS connection.
	LocalConn *nats.Conn
	// Local reaches this node's registry as its replication writer.
	Local Endpoint
	// Parent reaches the parent's registry with the sync token.
	ParentRegistry Endpoint
	// UpstreamTTL is how long an event waits in the upstream outbox.
	UpstreamTTL time.Duration
	// Poll bounds how long a worker waits for a message before looking again.
	Poll   time.Duration
	Logger *slog.Logger
}

// Link moves content between a node and its parent: downstream drains the parent's
// outbox for this node into the local registry, upstream drains the local upstream
// outbox into the parent's. A message is acked only once its copy completed.
type Link struct {
	cfg  LinkConfig
	down *Copier
	up   *Copier

	mu    sync.Mutex
	state LinkState
}

// LinkState is what the link reports in the node's status.
type LinkState struct {
	// LastSync is the last time the link found its downstream queue drained.
	LastSync time.Time
	// LastActivity is the last time content moved either way.
	LastActivity time.Time
	// LastError is the last failure, cleared by the next success.
	LastError     string
	LastErrorTime time.Time
}

// NewLink builds the link's copiers.
func NewLink(ctx context.Context, cfg LinkConfig) (*Link, error) {
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	local := cfg.Local
	local.Header = cloneHeader(local.Header)
	local.Header.Set(events.HeaderFrom, cfg.Parent)
	down, err := NewCopier(ctx, cfg.ParentRegistry, local)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	up, err := NewCopier(ctx, cfg.Local, cfg.ParentRegistry)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	return &Link{cfg: cfg, down: down, up: up}, nil
}

func cloneHeader(h http.Header) http.Header {
	if h == nil {
		return http.Header{}
	}
	return h.Clone()
}

// State reads the link's state.
func (l *Link) State() LinkState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

func (l *Link) record(f func(*LinkState)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.state)
}

// Down is the copier from the parent to this node (for reconcile).
func (l *Link) Down() *Copier { return l.down }

// Up is the copier from this node to the parent (for reconcile).
func (l *Link) Up() *Copier { return l.up }

// RunDownstream drains the parent's outbox for this node until ctx ends.
func (l *Link) RunDownstream(ctx context.Context) error {
	q, err := retryOpen(ctx, l.cfg.Logger, "downstream outbox", func() (*events.Queue, error) {
		return events.OpenQueue(ctx, l.cfg.ParentConn, events.DownstreamOutbox(l.cfg.Self))
	})
	if err != nil {
		return err
	}
	return l.drain(ctx, "downstream", q, l.down)
}

// RunUpstream drains this node's upstream outbox into the parent until ctx ends.
func (l *Link) RunUpstream(ctx context.Context) error {
	if _, err := events.OpenOutbox(ctx, l.cfg.LocalConn, events.UpstreamOutbox(), l.cfg.UpstreamTTL); err != nil {
		return err
	}
	q, err := events.OpenQueue(ctx, l.cfg.LocalConn, events.UpstreamOutbox())
	if err != nil {
		return err
	}
	return l.drain(ctx, "upstream", q, l.up)
}

func retryOpen(ctx context.Context, log *slog.Logger, what string, open func() (*events.Queue, error)) (*events.Queue, error) {
	r := newRetry()
	for {
		q, err := open()
		if err == nil {
			return q, nil
		}
		log.Warn("link: open "+what, "err", err)
		sleep(ctx, r.next())
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

func (l *Link) drain(ctx context.Context, direction string, q *events.Queue, c *Copier) error {
	retry := newRetry()
	for ctx.Err() == nil {
		d, err := q.Next(ctx, l.cfg.Poll)
		if err != nil {
			l.fail(direction, err)
			sleep(ctx, retry.next())
			continue
		}
		if d == nil {
			if direction == "downstream" {
				l.record(func(s *LinkState) { s.LastSync = time.Now().UTC() })
			}
			continue
		}
		if err := l.apply(ctx, d, c); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.fail(direction, fmt.Errorf("%s %s %s: %w", d.Event.Action, d.Event.Repository, d.Event.ID, err))
			_ = d.Retry(retry.next())
			continue
		}
		if err := d.Ack(ctx); err != nil {
			l.fail(direction, fmt.Errorf("ack %s: %w", d.Event.ID, err))
			continue
		}
		retry.reset()
		l.record(func(s *LinkState) {
			s.LastActivity, s.LastError = time.Now().UTC(), ""
			if d.Pending == 0 && direction == "downstream" {
				s.LastSync = s.LastActivity
			}
		})
		l.cfg.Logger.Debug("link: applied", "direction", direction, "action", d.Event.Action,
			"repository", d.Event.Repository, "tag", d.Event.Tag, "digest", d.Event.Digest)
	}
	return nil
}

// apply copies one event's content, telling the server the message is still being
// worked on while a large copy runs.
func (l *Link) apply(ctx context.Context, d *events.Delivery, c *Copier) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(events.AckWait / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = d.InProgress()
			}
		}
	}()
	return c.Apply(WithOrigin(ctx, d.Event.Origin), d.Event)
}

func (l *Link) fail(direction string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	l.cfg.Logger.Warn("link: "+direction, "err", err)
	l.record(func(s *LinkState) { s.LastError, s.LastErrorTime = direction+": "+err.Error(), time.Now().UTC() })
}

type originKey struct{}

// WithOrigin makes copies made with ctx say the change was first made at origin.
func WithOrigin(ctx context.Context, origin string) context.Context {
	return context.WithValue(ctx, originKey{}, origin)
}
