package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The local event log: one stream per node, one subject per action.
const (
	StreamName    = "EVENTS"
	subjectPrefix = "outpost.events."
)

// Message TTL bounds, as the product this replaces allows them.
const (
	MinMessageTTL     = 24 * time.Hour
	MaxMessageTTL     = 90 * 24 * time.Hour
	DefaultMessageTTL = 2 * 24 * time.Hour
)

// LogConfig configures a node's event log.
type LogConfig struct {
	// MessageTTL is how long an event stays in the log. Default DefaultMessageTTL;
	// must lie within MinMessageTTL..MaxMessageTTL.
	MessageTTL time.Duration
	// Registerer receives the log's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock for event times; default time.Now.
	Now func() time.Time
	// RecordFile keeps the last sequence stored, outside the NATS store, so that a
	// log that lost its tail on disk is found damaged at open (integrity.go).
	// Empty: no record, only the checks expiry can explain.
	RecordFile string
	// RecordInterval is how often the record is written when it changed; default 1 s.
	RecordInterval time.Duration
	// ReadIdle bounds how long a read that does not follow waits for the next
	// event it expects; default 5 s. A damaged stream may announce events it never
	// delivers.
	ReadIdle time.Duration
	// VerifyTimeout bounds the read of the whole log at open that finds events the
	// stream counts but cannot deliver; default 30 s, negative skips it.
	VerifyTimeout time.Duration
	// Placement is the stream's copies and the retries of its creation and of each
	// publish (Server.Placement); the zero value is a single server's.
	Placement Placement
}

// Validate checks the configuration, naming the field that is wrong.
func (c *LogConfig) Validate() error {
	if c.MessageTTL < MinMessageTTL || c.MessageTTL > MaxMessageTTL {
		return fmt.Errorf("message TTL %s: must be from P1D to P90D", FormatDuration(c.MessageTTL))
	}
	if t := c.Placement.Publish.Timeout; t >= DedupeWindow {
		return fmt.Errorf("event log: publish retries for %s: must stay below the %s dedupe window, or a retried publish could be stored twice", t, DedupeWindow)
	}
	return nil
}

// Log is a node's durable, ordered event log in JetStream.
type Log struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	cfg     LogConfig
	ttl     atomic.Int64 // the message TTL in force; settings from the root can change it
	metrics *logMetrics
	rec     *recorder
	damage  atomic.Pointer[Damage]
}

// OpenLog creates or updates the EVENTS stream and returns the log.
func OpenLog(ctx context.Context, nc *nats.Conn, cfg LogConfig) (*Log, error) {
	if cfg.MessageTTL == 0 {
		cfg.MessageTTL = DefaultMessageTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RecordInterval == 0 {
		cfg.RecordInterval = time.Second
	}
	if cfg.ReadIdle == 0 {
		cfg.ReadIdle = 5 * time.Second
	}
	if cfg.VerifyTimeout == 0 {
		cfg.VerifyTimeout = 30 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	stream, err := createStream(ctx, js, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "registry changes at this node, in order",
		Subjects:    []string{subjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		AllowMsgTTL: true,
		// No message outlives the longest TTL a link may have.
		MaxAge: MaxMessageTTL,
		// A publish retried with the same id within it is stored once.
		Duplicates: DedupeWindow,
	}, cfg.Placement)
	if err != nil {
		return nil, fmt.Errorf("open event log: stream %s: %w", StreamName, err)
	}
	// The check at open reads the log from this member's copy: wait until it has
	// caught up, or events it lacks would be found lost.
	if err := cfg.Placement.waitCaughtUp(ctx, StreamName, stream.CachedInfo().State.LastSeq); err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	l := &Log{js: js, stream: stream, cfg: cfg}
	l.ttl.Store(int64(cfg.MessageTTL))
	if err := l.openRecord(ctx); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		m, err := newLogMetrics(cfg.Registerer, l)
		if err != nil {
			return nil, fmt.Errorf("open event log: metrics: %w", err)
		}
		l.metrics = m
	}
	return l, nil
}

// Publish appends e to the log and returns once JetStream has stored it. It fills in
// the id and time when they are empty. In a cluster it retries across a leader
// change with the event id as message id, so the event is stored once: a retry of
// an attempt that was stored but not acknowledged is found a duplicate. Its error
// is a RetryableError (IsRetryable) when the retries ran out on transient failures.
func (l *Log) Publish(ctx context.Context, e *Event) error {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = l.cfg.Now().UTC()
	}
	if err := e.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("publish event %s: %w", e.ID, err)
	}
	if d := l.damage.Load(); d != nil && d.Regressed {
		return fmt.Errorf("publish event %s %s: %w: %v", e.Action, e.Repository, ErrLogDamaged, d)
	}
	start := time.Now()
	var ack *jetstream.PubAck
	err = l.cfg.Placement.Publish.do(ctx, "publish", func(ctx context.Context) error {
		var err error
		ack, err = l.js.Publish(ctx, subjectPrefix+string(e.Action), data,
			jetstream.WithMsgID(e.ID),
			jetstream.WithMsgTTL(time.Duration(l.ttl.Load())),
			jetstream.WithExpectStream(StreamName))
		return err
	})
	l.metrics.observePublish(time.Since(start), err)
	if err != nil {
		return fmt.Errorf("publish event %s %s %s: %w", e.Action, e.Repository, e.ID, err)
	}
	e.Sequence = ack.Sequence
	if l.rec != nil {
		l.rec.saw(ack.Sequence)
	}
	return nil
}

// openRecord checks the stream against the record and what expiry explains, then
// keeps the record.
func (l *Log) openRecord(ctx context.Context) error {
	var rec logRecord
	if l.cfg.RecordFile != "" {
		var err error
		if rec, err = readRecord(l.cfg.RecordFile); err != nil {
			return fmt.Errorf("open event log: %w", err)
		}
	}
	d, err := l.check(ctx, rec)
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	l.damage.Store(d)
	if l.cfg.RecordFile == "" {
		return nil
	}
	st, err := l.Stats(ctx)
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	// Until a repair, the record keeps what the log held before the damage.
	seen := max(rec.LastSeq, st.LastSeq)
	l.rec = &recorder{file: l.cfg.RecordFile, seen: seen, kept: rec.LastSeq, acked: rec.Acknowledged,
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.rec.flush(); err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	go l.rec.run(l.cfg.RecordInterval)
	return nil
}

// Placement is the log's placement: the router makes outboxes with it.
func (l *Log) Placement() Placement { return l.cfg.Placement }

// SetMessageTTL changes the TTL of events published from now on.
func (l *Log) SetMessageTTL(ttl time.Duration) error {
	c := LogConfig{MessageTTL: ttl}
	if err := c.Validate(); err != nil {
		return err
	}
	l.ttl.Store(int64(ttl))
	return nil
}

// readCallTimeout bounds each JetStream call a read makes before events flow.
const readCallTimeout = 10 * time.Second

// ErrReadStalled is returned by a read that stopped waiting for events the log
// counts but does not deliver.
var ErrReadStalled = errors.New("event log read stalled")

// Stats is the size of the log.
type Stats struct {
	Messages uint64
	Bytes    uint64
	FirstSeq uint64
	LastSeq  uint64
}

// Stats reads the stream's current size.
func (l *Log) Stats(ctx context.Context) (Stats, error) {
	// The stream's leader answers: in a cluster, a leader killed a moment ago
	// answers nothing until another is elected (4 to 10 s). Publish's retries
	// span that.
	var info *jetstream.StreamInfo
	err := l.cfg.Placement.Publish.do(ctx, "event log stats", func(ctx context.Context) error {
		var err error
		info, err = l.stream.Info(ctx)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("event log stats: %w", err)
	}
	return Stats{Messages: info.State.Msgs, Bytes: info.State.Bytes,
		FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq}, nil
}

// ReadOptions selects what Read delivers.
type ReadOptions struct {
	// Last delivers only the newest Last events; 0 delivers all.
	Last uint64
	// Follow keeps delivering new events until ctx ends.
	Follow bool
}

// Read calls fn with each event in order, oldest first. Without Follow it returns
// once it has delivered what the log held when it started.
func (l *Log) Read(ctx context.Context, opts ReadOptions, fn func(*Event) error) error {
	// Each call to JetStream is bounded: an operator's read answers promptly, or
	// says why not.
	stctx, cancel := context.WithTimeout(ctx, max(readCallTimeout, l.cfg.Placement.Publish.Timeout))
	st, err := l.Stats(stctx)
	cancel()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, readCallTimeout)
	defer cancel()
	if !opts.Follow && st.Messages == 0 {
		return nil
	}
	// A consumer may be served from this member's copy (Server.caughtUp): a copy
	// that is catching up would end the read early.
	p := l.cfg.Placement
	p.Create.Timeout = min(p.Create.Timeout, readCallTimeout)
	if err := p.waitCaughtUp(sctx, StreamName, st.LastSeq); err != nil {
		return fmt.Errorf("read event log: %w", err)
	}
	start := st.FirstSeq
	if opts.Last > 0 && st.LastSeq >= opts.Last && st.LastSeq-opts.Last+1 > start {
		start = st.LastSeq - opts.Last + 1
	}
	// In a cluster the read's consumer is placed on any member holding a copy,
	// and a member killed a moment ago still counts as one until the others find
	// it gone: its consumer delivers nothing. A stalled read there starts a new
	// consumer where it stopped, a few times, before it calls the log damaged.
	retries := 0
	if l.cfg.Placement.caughtUp != nil {
		retries = clusterReadRetries
	}
	var delivered uint64
	for {
		stalled, err := l.readFrom(ctx, &start, st, opts, fn, &delivered)
		if !stalled {
			return err
		}
		if retries == 0 {
			return fmt.Errorf("read event log: %w: no event came for %s after %d delivered, though the log says it holds %d (sequences %d-%d)",
				ErrReadStalled, l.cfg.ReadIdle, delivered, st.Messages, st.FirstSeq, st.LastSeq)
		}
		retries--
	}
}

// clusterReadRetries is how many new consumers a stalled read in a cluster tries.
const clusterReadRetries = 5

// readFrom delivers events from sequence *next with one ordered consumer, and
// leaves *next after the last one delivered. It says whether the read stalled:
// no event came for ReadIdle while some were due.
func (l *Log) readFrom(ctx context.Context, next *uint64, st Stats, opts ReadOptions, fn func(*Event) error, delivered *uint64) (stalled bool, err error) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if *next > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = *next
	}
	// A consumer made on a member killed a moment ago is never answered for: in a
	// cluster the attempt is given up after a second and made again.
	sctx, cancel := context.WithTimeout(ctx, max(readCallTimeout, l.cfg.Placement.Publish.Timeout))
	defer cancel()
	var cons jetstream.Consumer
	err = l.cfg.Placement.Publish.do(sctx, "read event log", func(ctx context.Context) error {
		var err error
		cons, err = l.js.OrderedConsumer(ctx, StreamName, cfg)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read event log: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return false, fmt.Errorf("read event log: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var idle *time.Timer
	var idled atomic.Bool
	if !opts.Follow {
		// A damaged stream may count events it never delivers: stop waiting.
		idle = time.AfterFunc(l.cfg.ReadIdle, func() { idled.Store(true); it.Stop() })
		defer idle.Stop()
	}
	for {
		m, err := it.Next()
		if idle != nil {
			idle.Stop()
		}
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return idled.Load(), nil
			}
			return false, fmt.Errorf("read event log: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return false, fmt.Errorf("read event log: %w", err)
		}
		e, err := decode(m.Data(), meta.Sequence.Stream)
		if err != nil {
			return false, err
		}
		if err := fn(e); err != nil {
			return false, err
		}
		*delivered++
		*next = meta.Sequence.Stream + 1
		if idle != nil {
			idle.Reset(l.cfg.ReadIdle) // the wait for the next one, not the caller's time
		}
		if !opts.Follow && (meta.Sequence.Stream >= st.LastSeq || meta.NumPending == 0) {
			return false, nil
		}
	}
}
