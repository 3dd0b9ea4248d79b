package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Outboxes: one durable queue per neighbour, drained by one durable consumer.
const (
	upstreamOutbox   = "UPSTREAM"
	downstreamPrefix = "DOWN_"
	outboxSubject    = "outpost.outbox."
	drainConsumer    = "drain"
	routerConsumer   = "router"
	// AckWait is how long a delivered message may go unacknowledged before it is
	// delivered again; workers signal progress on long copies every quarter of it.
	// Short, because a message can be delivered to a pull request its worker gave up
	// on (a window closed, a process stopped): it comes back after AckWait.
	AckWait = 30 * time.Second
	// RouterAckWait is AckWait for the router's durable on the event log. With one
	// event in flight for every member's router, an event held by a member that
	// died stopped routing for the whole tier until it came back: 30 s after a
	// SIGKILL, before any site saw a change again. A router that takes longer (its
	// appends retrying across a leader change) sees the event routed again by
	// another member: the outboxes' message ids make the second append a duplicate.
	RouterAckWait = 5 * time.Second
	// MaxBatch is the most messages a worker holds unacknowledged at once.
	MaxBatch = 256
)

// UpstreamOutbox names the outbox toward this node's parent.
func UpstreamOutbox() string { return upstreamOutbox }

// DownstreamOutbox names the outbox, at a parent, toward one child.
func DownstreamOutbox(child string) string { return downstreamPrefix + child }

// Outbox is the durable queue of events waiting for one neighbour.
type Outbox struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
	ttl    time.Duration
	retry  RetryPolicy
}

// OpenOutbox creates or updates an outbox and its drain consumer. ttl is how long a
// message waits for the neighbour (the link's message TTL).
func OpenOutbox(ctx context.Context, nc *nats.Conn, name string, ttl time.Duration, opts ...OpenOption) (*Outbox, error) {
	p := placementOf(opts)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", name, err)
	}
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: "events waiting for one neighbour",
		Subjects:    []string{outboxSubject + name},
		Storage:     jetstream.FileStorage,
		// An applied message leaves the outbox: what is left is what waits.
		Retention:   jetstream.WorkQueuePolicy,
		AllowMsgTTL: true,
		MaxAge:      MaxMessageTTL,
		Duplicates:  DedupeWindow,
	}
	ccfg := jetstream.ConsumerConfig{
		Durable: drainConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: AckWait,
		// A worker takes batches and applies different tags at once; the copy engine
		// applies current state, so order between different tags does not matter.
		MaxAckPending: MaxBatch,
	}
	// An outbox as configured already is only looked up: an update, even to the same
	// configuration, rewrites the stream's and the consumer's state files, and a root
	// opens every child's outbox after each start. Its replicas count too: an outbox
	// made before its node joined a root tier is updated to the tier's.
	if stream, err := js.Stream(ctx, name); err == nil && sameOutbox(stream.CachedInfo().Config, cfg) &&
		stream.CachedInfo().Config.Replicas >= p.replicas() {
		if c, err := stream.Consumer(ctx, drainConsumer); err == nil && sameDrain(c.CachedInfo().Config, ccfg) {
			return &Outbox{js: js, stream: stream, name: name, ttl: ttl, retry: p.Publish}, nil
		}
	}
	stream, err := createStream(ctx, js, cfg, p)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", name, err)
	}
	if err := p.Create.do(ctx, "create consumer "+name+"/"+drainConsumer, func(ctx context.Context) error {
		_, err := stream.CreateOrUpdateConsumer(ctx, ccfg)
		return err
	}); err != nil {
		return nil, fmt.Errorf("open outbox %s: consumer: %w", name, err)
	}
	return &Outbox{js: js, stream: stream, name: name, ttl: ttl, retry: p.Publish}, nil
}

// sameOutbox says whether a stream's configuration is the one OpenOutbox sets.
func sameOutbox(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Storage == want.Storage && have.Retention == want.Retention &&
		have.AllowMsgTTL == want.AllowMsgTTL && have.MaxAge == want.MaxAge && have.Duplicates == want.Duplicates
}

// sameDrain says whether a drain consumer's configuration is the one OpenOutbox sets.
func sameDrain(have, want jetstream.ConsumerConfig) bool {
	return have.Durable == want.Durable && have.AckPolicy == want.AckPolicy &&
		have.AckWait == want.AckWait && have.MaxAckPending == want.MaxAckPending
}

// Name is the outbox's stream name.
func (o *Outbox) Name() string { return o.name }

// Append queues e for the neighbour. key makes the append idempotent within the
// dedupe window (the router passes event id + neighbour).
func (o *Outbox) Append(ctx context.Context, e *Event, key string) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	// Retried with the same id across a leader change: stored once.
	subject, opts := o.publishArgs(key)
	if err := o.retry.do(ctx, "append", func(ctx context.Context) error {
		_, err := o.js.Publish(ctx, subject, data, opts...)
		return err
	}); err != nil {
		return fmt.Errorf("append %s to outbox %s: %w", e.ID, o.name, err)
	}
	return nil
}

// publishArgs are the subject and options of every append, one at a time or
// pipelined (Appender): key is the message id, so that an append made again within
// the dedupe window is dropped as a duplicate.
func (o *Outbox) publishArgs(key string) (string, []jetstream.PublishOpt) {
	return outboxSubject + o.name, []jetstream.PublishOpt{
		jetstream.WithMsgID(key), jetstream.WithMsgTTL(o.ttl), jetstream.WithExpectStream(o.name)}
}

// Pending is what waits in an outbox.
type Pending struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// FirstSeq and LastSeq bound what the stream holds; a drain whose next sequence
	// is below FirstSeq lost messages to their TTL.
	FirstSeq uint64 `json:"-"`
	LastSeq  uint64 `json:"-"`
}

// Pending reads the outbox's size.
func (o *Outbox) Pending(ctx context.Context) (Pending, error) {
	info, err := o.stream.Info(ctx)
	if err != nil {
		return Pending{}, fmt.Errorf("outbox %s: %w", o.name, err)
	}
	return pendingOf(info.State), nil
}

func pendingOf(s jetstream.StreamState) Pending {
	return Pending{Messages: s.Msgs, Bytes: s.Bytes, FirstSeq: s.FirstSeq, LastSeq: s.LastSeq}
}

// DeleteOutbox removes an outbox and what waits in it (a deleted child).
func DeleteOutbox(ctx context.Context, nc *nats.Conn, name string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete outbox %s: %w", name, err)
	}
	return nil
}

// Queue is the consuming end of an outbox or of the event log, local or at a parent.
type Queue struct {
	js     jetstream.JetStream
	stream string
	cons   jetstream.Consumer
}

// OpenQueue binds to an outbox's drain consumer over nc, which may be a connection
// to the parent's gateway.
func OpenQueue(ctx context.Context, nc *nats.Conn, outbox string) (*Queue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.Consumer(ctx, outbox, drainConsumer)
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", outbox, err)
	}
	return &Queue{js: js, stream: outbox, cons: cons}, nil
}

// Bounds returns the first and last sequence the queue's stream holds (first is
// last+1 when it is empty). Messages below first that were never acked expired or
// were purged: lost to this consumer.
func (q *Queue) Bounds(ctx context.Context) (first, last uint64, err error) {
	p, err := q.Pending(ctx)
	return p.FirstSeq, p.LastSeq, err
}

// Pending reads what waits in the queue's stream (at a parent: one stream info
// request, which a child may make for its own outbox).
func (q *Queue) Pending(ctx context.Context) (Pending, error) {
	st, err := q.js.Stream(ctx, q.stream)
	if err != nil {
		return Pending{}, fmt.Errorf("outbox %s: %w", q.stream, err)
	}
	return pendingOf(st.CachedInfo().State), nil
}

// Consume returns a queue over the event log for the node's router.
func (l *Log) Consume(ctx context.Context) (*Queue, error) {
	// One message in flight: several members' routers on this one durable take the
	// events in turn, in order.
	var cons jetstream.Consumer
	err := l.cfg.Placement.Create.do(ctx, "create consumer "+StreamName+"/"+routerConsumer, func(ctx context.Context) error {
		var err error
		cons, err = l.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: routerConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: RouterAckWait, MaxAckPending: 1,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("event log consumer: %w", err)
	}
	return &Queue{js: l.js, stream: StreamName, cons: cons}, nil
}

// Delivery is one message taken from a queue, to be acked once applied.
type Delivery struct {
	acked atomic.Bool
	Event *Event
	// Sequence is the message's position in its stream.
	Sequence uint64
	// Pending is how many more messages wait behind it.
	Pending uint64
	msg     jetstream.Msg
}

// Next waits up to wait for a message; it returns nil, nil when none came.
func (q *Queue) Next(ctx context.Context, wait time.Duration) (*Delivery, error) {
	if ctx.Err() != nil {
		return nil, nil
	}
	// The server gives up on the pull after wait; this side waits a second longer
	// (FetchMaxWait), so that a message the server hands over at the last moment is
	// still taken. With both ends a tenth of wait apart (a FetchContext deadline), a
	// loaded parent's message reached pulls already given up and waited out AckWait
	// (30 s): most children of a root of 1,000 did, on one push.
	batch, err := q.cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	select {
	case m, ok := <-batch.Messages():
		if ok {
			return delivery(m)
		}
	case <-ctx.Done():
		return nil, nil // a message handed over now comes back after AckWait
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return nil, nil
}

// NextBatch returns the messages waiting now, up to max, without waiting; when none
// wait it waits up to wait for one. It returns nothing when none came.
func (q *Queue) NextBatch(ctx context.Context, max int, wait time.Duration) ([]*Delivery, error) {
	batch, err := q.cons.FetchNoWait(max)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var out []*Delivery
	for m := range batch.Messages() {
		d, err := delivery(m)
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	if len(out) > 0 {
		return out, nil
	}
	d, err := q.Next(ctx, wait)
	if err != nil || d == nil {
		return nil, err
	}
	return []*Delivery{d}, nil
}

func delivery(m jetstream.Msg) (*Delivery, error) {
	meta, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	e, err := decode(m.Data(), meta.Sequence.Stream)
	if err != nil {
		_ = m.Term() // a message that cannot be read never will be
		return nil, err
	}
	return &Delivery{Event: e, Sequence: meta.Sequence.Stream, Pending: meta.NumPending, msg: m}, nil
}

// NextSequence is the stream sequence the queue will deliver next.
func (q *Queue) NextSequence(ctx context.Context) (uint64, error) {
	info, err := q.cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.Delivered.Stream + 1, nil
}

// Ack confirms the message was applied; it waits for the server's confirmation.
func (d *Delivery) Ack(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

// AckAsync confirms the message without waiting. A lost ack only means the message
// is delivered and applied once more, which changes nothing.
func (d *Delivery) AckAsync() error {
	err := d.msg.Ack()
	if err == nil {
		d.acked.Store(true)
	}
	return err
}

// Settled reports whether the message was acked here.
func (d *Delivery) Settled() bool { return d.acked.Load() }

// Retry hands the message back for redelivery after delay.
func (d *Delivery) Retry(delay time.Duration) error { return d.msg.NakWithDelay(delay) }

// InProgress extends the ack deadline during a long copy.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Peek returns up to max events waiting in the outbox, oldest first, without
// consuming them (for status: what the waiting messages name).
func (o *Outbox) Peek(ctx context.Context, max int) ([]*Event, error) {
	info, err := o.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", o.name, err)
	}
	var out []*Event
	// Acked messages leave holes in a work queue: bound the probes too.
	for seq, probes := info.State.FirstSeq, 0; seq <= info.State.LastSeq && len(out) < max && probes < 4*max; seq, probes = seq+1, probes+1 {
		m, err := o.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("outbox %s: read %d: %w", o.name, seq, err)
		}
		e, err := decode(m.Data, seq)
		if err != nil {
			continue // a message no worker could apply either
		}
		out = append(out, e)
	}
	return out, nil
}
