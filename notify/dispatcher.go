package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"
)

// Source lists the webhook definitions a node holds (its bucket, kept in step with
// the root by the sync).
type Source interface {
	List(ctx context.Context) ([]*Webhook, error)
}

// Config configures a node's Dispatcher.
type Config struct {
	// Node is this node's name: it delivers the webhooks whose scope names it or
	// the whole tree, for the changes made here (by clients or by replication).
	Node string
	// Conn is the node's own connection to its NATS server.
	Conn *nats.Conn
	// Log is the node's event log.
	Log *events.Log
	// Webhooks lists the definitions.
	Webhooks Source
	// Registerer receives the webhook metrics; nil registers none.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Client sends the notifications. Default: 10 s per attempt, redirects not
	// followed (a 3xx is a failed attempt).
	Client *http.Client
	// Now is the clock for signatures and TTLs; default time.Now.
	Now func() time.Time
	// Refresh is how often definitions are read again and backlogs measured;
	// default 2 s.
	Refresh time.Duration
	// MinBackoff and MaxBackoff space the attempts after failures (exponential with
	// jitter); default 500 ms and 10 s. A receiver that comes back is tried again
	// within MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Poll is how long a worker waits for a message before looking again; default 1 s.
	Poll time.Duration
	// ListAge is how long the feeder reuses the definitions it read (a burst of
	// events costs one read, not one each); default 250 ms. A webhook hears of the
	// changes made from at most this long after it reached the node.
	ListAge time.Duration
}

// DefaultConfig returns the defaults; Node, Conn, Log and Webhooks must be set.
func DefaultConfig() Config {
	return Config{
		Logger:     slog.Default(),
		Client:     &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		Now:        time.Now,
		Refresh:    2 * time.Second,
		MinBackoff: 500 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
		Poll:       time.Second,
		ListAge:    250 * time.Millisecond,
	}
}

// Validate names the field that is missing or wrong.
func (c *Config) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("notify: Node is empty")
	case c.Conn == nil:
		return errors.New("notify: Conn is nil")
	case c.Log == nil:
		return errors.New("notify: Log is nil")
	case c.Webhooks == nil:
		return errors.New("notify: Webhooks is nil")
	case c.Logger == nil, c.Client == nil, c.Now == nil:
		return errors.New("notify: Logger, Client and Now must be set (start from DefaultConfig)")
	case c.Refresh <= 0, c.Poll <= 0, c.ListAge < 0:
		return fmt.Errorf("notify: Refresh %s and Poll %s must be positive, ListAge %s not negative", c.Refresh, c.Poll, c.ListAge)
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("notify: backoff %s..%s: want 0 < MinBackoff <= MaxBackoff", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// ttlGrace is how much longer than its TTL a message may stay in the outbox: the
// worker drops it at the TTL and counts it; the store's own expiry is the backstop.
const ttlGrace = time.Hour

// Dispatcher delivers a node's events to its webhooks. One durable consumer on the
// event log (events.NotifyConsumer) appends each event to the outbox of every
// webhook that wants it; one worker per webhook drains its outbox to the receiver,
// at least once, acking a message only after a 2xx.
type Dispatcher struct {
	cfg     Config
	metrics *metrics

	ready chan struct{}

	mu       sync.Mutex
	runCtx   context.Context // Run's: the workers' parent
	workers  map[string]*worker
	outboxes map[string]*events.Outbox
}

// New returns a dispatcher; Run starts it.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, ready: make(chan struct{}), workers: map[string]*worker{}, outboxes: map[string]*events.Outbox{}}
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer)
		if err != nil {
			return nil, fmt.Errorf("notify: metrics: %w", err)
		}
		d.metrics = m
	}
	return d, nil
}

// Run feeds the outboxes and runs the workers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	d.runCtx = ctx
	d.mu.Unlock()
	q, err := d.cfg.Log.ConsumeFromNow(ctx, events.NotifyConsumer)
	if err != nil {
		return err
	}
	close(d.ready)
	d.refresh(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d.feed(ctx, q) }()
	t := time.NewTicker(d.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			d.mu.Lock()
			for _, w := range d.workers {
				w.stop()
			}
			d.mu.Unlock()
			for _, w := range d.workers {
				w.wait()
			}
			return nil
		case <-t.C:
			d.refresh(ctx)
		}
	}
}

// Ready is closed once the dispatcher reads the event log: the events published
// from then on are delivered.
func (d *Dispatcher) Ready() <-chan struct{} { return d.ready }

// mine lists the enabled webhooks this node delivers.
func (d *Dispatcher) mine(ctx context.Context) ([]*Webhook, error) {
	all, err := d.cfg.Webhooks.List(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, w := range all {
		if w.InScope(d.cfg.Node) {
			out = append(out, w)
		}
	}
	return out, nil
}

// feed moves each event of the log to the outboxes of the webhooks that want it;
// the event is acked in the log only when every append is durable.
func (d *Dispatcher) feed(ctx context.Context, q *events.Queue) {
	retry := d.backoff()
	var (
		hooks []*Webhook
		read  time.Time
	)
	for ctx.Err() == nil {
		del, err := q.Next(ctx, d.cfg.Poll)
		if err != nil {
			d.cfg.Logger.Warn("webhooks: read event log", "err", err)
			sleep(ctx, retry.NextBackOff())
			continue
		}
		if del == nil {
			continue
		}
		if now := time.Now(); read.IsZero() || now.Sub(read) >= d.cfg.ListAge {
			if hooks, err = d.mine(ctx); err != nil {
				d.cfg.Logger.Warn("webhooks: read definitions", "err", err)
				_ = del.Retry(retry.NextBackOff())
				continue
			}
			read = now
		}
		if err := d.route(ctx, hooks, del.Event); err != nil {
			d.cfg.Logger.Warn("webhooks: append to outbox", "event", del.Event.ID, "err", err)
			_ = del.Retry(retry.NextBackOff())
			continue
		}
		if err := del.Ack(ctx); err != nil && ctx.Err() == nil {
			d.cfg.Logger.Warn("webhooks: ack event", "event", del.Event.ID, "err", err)
			continue
		}
		retry.Reset()
	}
}

func (d *Dispatcher) route(ctx context.Context, hooks []*Webhook, e *events.Event) error {
	for _, h := range hooks {
		if !h.Enabled || !h.Matches(e) {
			continue
		}
		ob, err := d.outbox(ctx, h)
		if err != nil {
			return err
		}
		if err := ob.Append(ctx, e, e.ID+"."+h.Name); err != nil {
			return err
		}
		// A webhook that arrived since the last refresh starts delivering now.
		d.ensureWorker(h)
	}
	return nil
}

// ensureWorker starts the worker of an enabled webhook, or hands a running one the
// current definition (a new URL, secret or TTL applies to its next attempt).
func (d *Dispatcher) ensureWorker(h *Webhook) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w, ok := d.workers[h.Name]; ok {
		w.def.Store(h)
		return
	}
	if !h.Enabled || d.runCtx == nil || d.runCtx.Err() != nil {
		return
	}
	w := d.newWorker(d.runCtx, h)
	d.workers[h.Name] = w
	go w.run()
}

func (d *Dispatcher) outbox(ctx context.Context, h *Webhook) (*events.Outbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ttl := h.TTLDuration() + ttlGrace
	key := h.Name + "/" + ttl.String()
	if ob, ok := d.outboxes[key]; ok {
		return ob, nil
	}
	// The log's placement: in a root tier the outbox is replicated like the log.
	ob, err := events.OpenOutbox(ctx, d.cfg.Conn, events.WebhookOutbox(h.Name), ttl, events.WithPlacement(d.cfg.Log.Placement()))
	if err != nil {
		return nil, err
	}
	d.outboxes[key] = ob
	return ob, nil
}

// refresh starts a worker for each enabled webhook, stops those of webhooks gone
// or disabled, removes the outboxes of deleted ones, and measures backlogs.
func (d *Dispatcher) refresh(ctx context.Context) {
	hooks, err := d.mine(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("webhooks: read definitions", "err", err)
		}
		return
	}
	known := map[string]*Webhook{}
	for _, h := range hooks {
		known[h.Name] = h
	}
	var stopped []*worker
	d.mu.Lock()
	for name, w := range d.workers {
		if h, ok := known[name]; !ok || !h.Enabled {
			w.stop()
			stopped = append(stopped, w)
			delete(d.workers, name)
			d.metrics.forget(name)
		}
	}
	d.mu.Unlock()
	for _, h := range hooks {
		d.ensureWorker(h)
	}
	d.mu.Lock()
	workers := make([]*worker, 0, len(d.workers))
	for _, w := range d.workers {
		workers = append(workers, w)
	}
	d.mu.Unlock()
	for _, w := range stopped {
		w.wait()
	}
	for _, w := range workers {
		w.measure(ctx)
	}
	// A deleted webhook's backlog goes with it. Disabled ones keep theirs until TTL.
	names, err := events.ListWebhookOutboxes(ctx, d.cfg.Conn)
	if err != nil {
		return
	}
	for _, ob := range names {
		name, _ := events.WebhookOfOutbox(ob)
		if _, ok := known[name]; ok {
			continue
		}
		if err := events.DeleteOutbox(ctx, d.cfg.Conn, ob); err != nil {
			d.cfg.Logger.Warn("webhooks: remove outbox of deleted webhook", "webhook", name, "err", err)
			continue
		}
		d.mu.Lock()
		for k := range d.outboxes {
			if n, _, _ := cutLast(k, '/'); n == name {
				delete(d.outboxes, k)
			}
		}
		d.mu.Unlock()
		d.cfg.Logger.Info("webhooks: removed the outbox of a deleted webhook", "webhook", name)
	}
}

func cutLast(s string, sep byte) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Status is one webhook's delivery state at this node.
type Status struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// PendingMessages is the backlog: events waiting for the receiver.
	PendingMessages uint64 `json:"pendingMessages"`
	// Delivered, Failed and Expired count attempts since the process started.
	Delivered   uint64    `json:"delivered"`
	Failed      uint64    `json:"failed"`
	Expired     uint64    `json:"expired"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// Failing: the last attempt failed (LastError says why).
	Failing       bool      `json:"failing"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
}

// Status lists the webhooks this node delivers, by name, with their backlog read
// now.
func (d *Dispatcher) Status(ctx context.Context) []Status {
	hooks, err := d.mine(ctx)
	if err != nil {
		return nil
	}
	d.mu.Lock()
	workers := map[string]*worker{}
	for name, w := range d.workers {
		workers[name] = w
	}
	d.mu.Unlock()
	out := make([]Status, 0, len(hooks))
	for _, h := range hooks {
		st := Status{Name: h.Name, Enabled: h.Enabled}
		if w, ok := workers[h.Name]; ok {
			w.measure(ctx)
			st = w.status()
		} else if ob, err := d.outbox(ctx, h); err == nil {
			// Disabled, or not started yet: what waits is still its backlog.
			if p, err := ob.Pending(ctx); err == nil {
				st.PendingMessages = p.Messages
			}
		}
		st.Failing = st.LastErrorTime.After(st.LastSuccess)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *Dispatcher) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = d.cfg.MinBackoff
	b.MaxInterval = d.cfg.MaxBackoff
	b.MaxElapsedTime = 0 // a message leaves by success or by its TTL
	b.Reset()
	return b
}

// redactURL is the receiver's address for logs and status: no query (it may carry
// a key).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unreadable url)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// post sends one signed notification; nil means the receiver took it (2xx).
func (d *Dispatcher) post(ctx context.Context, h *Webhook, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("POST %s: %v", redactURL(h.URL), err)
	}
	now := d.cfg.Now()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(HeaderTimestamp, fmt.Sprint(now.Unix()))
	req.Header.Set(HeaderSignature, Sign(h.Secret, now, body))
	req.Header.Set(HeaderWebhook, h.Name)
	req.Header.Set("User-Agent", "outpost-webhook/1")
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the full URL, query included
		}
		return fmt.Errorf("POST %s: %v", redactURL(h.URL), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST %s: receiver answered %s", redactURL(h.URL), resp.Status)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
