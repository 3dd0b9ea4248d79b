package notify

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/outpost-edge/outpost/events"
)

// worker drains one webhook's outbox to its receiver.
type worker struct {
	d      *Dispatcher
	name   string
	def    atomic.Pointer[Webhook]
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	st Status
}

func (d *Dispatcher) newWorker(ctx context.Context, h *Webhook) *worker {
	w := &worker{d: d, name: h.Name, done: make(chan struct{}), st: Status{Name: h.Name, Enabled: true}}
	w.ctx, w.cancel = context.WithCancel(ctx)
	w.def.Store(h)
	return w
}

func (w *worker) stop() { w.cancel() }

func (w *worker) wait() { <-w.done }

func (w *worker) run() {
	defer close(w.done)
	ctx, d := w.ctx, w.d
	log := d.cfg.Logger.With("webhook", w.name)
	retry := d.backoff()
	var q *events.Queue
	for ctx.Err() == nil {
		if q == nil {
			var err error
			if _, err = d.outbox(ctx, w.def.Load()); err == nil {
				q, err = events.OpenQueue(ctx, d.cfg.Conn, events.WebhookOutbox(w.name))
			}
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("webhook: open outbox", "err", err)
				}
				sleep(ctx, retry.NextBackOff())
				continue
			}
		}
		del, err := q.Next(ctx, d.cfg.Poll)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("webhook: read outbox", "err", err)
				q = nil
				sleep(ctx, retry.NextBackOff())
			}
			continue
		}
		if del == nil {
			continue
		}
		h := w.def.Load()
		// The event's time is when the change happened at this node (a replicated
		// change is a new event here), so it is when the message was queued.
		if age := d.cfg.Now().Sub(del.Event.Time); age > h.TTLDuration() {
			log.Warn("webhook: event older than the webhook's TTL dropped", "event", del.Event.ID,
				"repository", del.Event.Repository, "age", age.Round(1e9).String(), "ttl", h.TTL)
			if err := del.Ack(ctx); err == nil {
				w.record(func(st *Status) { st.Expired++ })
				d.metrics.delivery(w.name, "expired")
			}
			continue
		}
		body, err := NewCloudEvent(d.cfg.Node, del.Event).Body()
		if err != nil {
			_ = del.Ack(ctx) // it never will encode
			continue
		}
		if err := d.post(ctx, h, body); err != nil {
			if ctx.Err() != nil {
				return // the node stops: the message comes back after AckWait
			}
			now := d.cfg.Now()
			w.record(func(st *Status) { st.Failed++; st.LastError, st.LastErrorTime = err.Error(), now.UTC() })
			d.metrics.delivery(w.name, "failure")
			delay := retry.NextBackOff()
			log.Warn("webhook: delivery failed, retrying", "event", del.Event.ID, "in", delay.String(), "err", err)
			_ = del.Retry(delay)
			sleep(ctx, delay)
			continue
		}
		if err := del.Ack(ctx); err != nil {
			// Delivered but not confirmed: it will be delivered again, with the same id.
			log.Warn("webhook: ack", "event", del.Event.ID, "err", err)
		}
		now := d.cfg.Now().UTC()
		w.record(func(st *Status) { st.Delivered++; st.LastSuccess = now })
		d.metrics.delivery(w.name, "success")
		d.metrics.succeeded(w.name, now)
		retry.Reset()
	}
}

func (w *worker) record(fn func(*Status)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(&w.st)
}

func (w *worker) status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// measure reads the backlog for status and metrics.
func (w *worker) measure(ctx context.Context) {
	ob, err := w.d.outbox(ctx, w.def.Load())
	if err != nil {
		return
	}
	p, err := ob.Pending(ctx)
	if err != nil {
		return
	}
	w.record(func(st *Status) { st.PendingMessages = p.Messages })
	w.d.metrics.pending(w.name, p.Messages)
}
