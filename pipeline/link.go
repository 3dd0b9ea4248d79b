package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

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
	Poll time.Duration
	// Window is when the link may move content; default always.
	Window Window
	// Now is the clock windows are read by; default time.Now.
	Now func() time.Time
	// Sequences keeps, across restarts, the highest stream sequence each direction
	// applied; nil keeps it in memory only.
	Sequences SequenceStore
	// Meter counts (and may limit) the bytes moved over the parent link; nil: none.
	Meter *Meter
	// OnGap is told when messages left a queue (their TTL ended, or they were purged)
	// before the link applied them: the link's scope needs a reconcile.
	OnGap func(direction string, lost uint64)
	// OnRestart is told, once the downstream queue is found drained, that this
	// node started after a crash (Unclean) or the parent's process changed (its
	// NATS server id) since the link last drained it: a node killed between a write
	// and its event never sends that event, so the link's scope needs a reconcile.
	// Waiting for the drain first keeps the reconcile from sending up a tag whose
	// delete is still on its way down.
	OnRestart func(why string)
	// Unclean says the last process on this node's data ended without a clean stop.
	Unclean bool
	// Ledger finds this node's writes that the parent's order overwrote; nil: none.
	Ledger *Ledger
	Logger *slog.Logger
}

// SequenceStore keeps the highest stream sequence a link direction applied.
type SequenceStore interface {
	LoadSequence(direction string) uint64
	SaveSequence(direction string, seq uint64)
}

// gapCheckInterval is how often an idle link asks whether messages expired unseen.
const gapCheckInterval = 5 * time.Second

// Link moves content between a node and its parent: downstream drains the parent's
// outbox for this node into the local registry, upstream drains the local upstream
// outbox into the parent's. A message is acked only once its copy completed.
type Link struct {
	cfg  LinkConfig
	down *Copier
	up   *Copier

	mu          sync.Mutex
	state       LinkState
	window      Window
	forcedUntil time.Time     // a `sync now` or recovered window, in the link's clock
	parentID    string        // the parent process's NATS server id, last seen
	restarted   string        // why a reconcile is due once the downstream queue drains
	downQ       *events.Queue // the parent's outbox for this node, once open
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
	// Open says whether content may move now; Until is when that ends (zero: never),
	// Next and NextEnd bound the next scheduled window while closed.
	Open          bool
	Until         time.Time
	Next, NextEnd time.Time
	// LastOpen is the start of the last window the link was open in.
	LastOpen time.Time
	// WindowError says why the link's window settings were refused: the link then
	// stays closed (except when forced) until the root sends working ones.
	WindowError string
	// Down and Up count what each direction did since the process started.
	Down, Up DirectionCounts
}

// DirectionCounts is what one direction of a link did since the process started
// (metrics, `outpost sync now --wait`).
type DirectionCounts struct {
	// Applied counts the messages applied and acknowledged.
	Applied uint64
	// CopyErrors counts the copies that failed (each is retried).
	CopyErrors uint64
	// Drained is the last time the direction found its queue empty.
	Drained time.Time
}

func (s *LinkState) counts(direction string) *DirectionCounts {
	if direction == "upstream" {
		return &s.Up
	}
	return &s.Down
}

// Counts is what direction ("downstream" or "upstream") did.
func (s LinkState) Counts(direction string) DirectionCounts { return *s.counts(direction) }

// NewLink builds the link's copiers.
func NewLink(ctx context.Context, cfg LinkConfig) (*Link, error) {
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Window.isZero() {
		cfg.Window = Window{always: true}
	}
	local := cfg.Local
	local.Header = cloneHeader(local.Header)
	local.Header.Set(events.HeaderFrom, cfg.Parent)
	fromParent, toParent := cfg.ParentRegistry, cfg.ParentRegistry
	if cfg.Meter != nil {
		base := cfg.ParentRegistry.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		fromParent.Transport = cfg.Meter.Transport(base, "downstream")
		toParent.Transport = cfg.Meter.Transport(base, "upstream")
	}
	down, err := NewCopier(ctx, fromParent, local)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	up, err := NewCopier(ctx, cfg.Local, toParent)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	locks := newRefLocks()
	for _, c := range []*Copier{down, up} {
		c.locks, c.watch = locks, cfg.Ledger
	}
	up.up = true
	l := &Link{cfg: cfg, down: down, up: up}
	l.SetWindow(cfg.Window)
	if cfg.Unclean {
		l.restarted = "this node restarted after a crash"
	}
	return l, nil
}

// SetWindow changes the link's window (settings from the root).
func (l *Link) SetWindow(w Window) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.window = w
	l.state.WindowError = ""
	if err := w.Err(); err != nil {
		l.state.WindowError = err.Error()
	}
}

// SyncNow opens the link at once for one window length (an hour for a link that is
// always open anyway): `outpost sync now`, `node resync`, a missed window.
func (l *Link) SyncNow() {
	l.mu.Lock()
	defer l.mu.Unlock()
	length := l.window.Length()
	if length == 0 {
		length = time.Hour
	}
	l.forcedUntil = l.cfg.Now().Add(length)
}

// RecoverMissed opens the link for one window length if a scheduled window passed
// since lastOpen while the node or link was down.
func (l *Link) RecoverMissed(lastOpen time.Time) bool {
	l.mu.Lock()
	w := l.window
	l.mu.Unlock()
	now := l.cfg.Now()
	start, end, ok := w.Previous(now)
	if !ok || !now.After(end) || !start.After(lastOpen) {
		l.cfg.Logger.Debug("link: no missed window", "now", now, "previous", start, "last_open", lastOpen)
		return false
	}
	l.cfg.Logger.Info("link: a sync window was missed; draining now", "missed", start)
	l.SyncNow()
	return true
}

// gate says whether content may move now and until when (zero: no end).
func (l *Link) gate() (open bool, until time.Time) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	open, start, end := l.window.At(now)
	s := &l.state
	s.Next, s.NextEnd = time.Time{}, time.Time{}
	switch {
	case l.window.Always():
		until = time.Time{}
	case open:
		until = end
		s.LastOpen = start
	default:
		s.Next, s.NextEnd = start, end
	}
	if now.Before(l.forcedUntil) {
		if !open || until.Before(l.forcedUntil) {
			until = l.forcedUntil
		}
		open = true
	}
	s.Open, s.Until = open, until
	return open, until
}

// WaitOpen blocks until the link may move content and returns a context that ends
// when it may no longer: at the end of the window no new copy starts, and one in
// flight stops.
func (l *Link) WaitOpen(ctx context.Context) (context.Context, context.CancelFunc) {
	for {
		open, until := l.gate()
		if open {
			if until.IsZero() {
				return context.WithCancel(ctx)
			}
			// The window is in the link's clock; the deadline in real time.
			return context.WithDeadline(ctx, time.Now().Add(until.Sub(l.cfg.Now())))
		}
		Sleep(ctx, l.cfg.Poll)
		if ctx.Err() != nil {
			return context.WithCancel(ctx)
		}
	}
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
	l.mu.Lock()
	l.downQ = q
	l.mu.Unlock()
	return l.drain(ctx, "downstream", q, l.down)
}

// DownstreamPending reads what waits for this node in its outbox at the parent
// (one request to the parent's gateway); an error before the queue is open.
func (l *Link) DownstreamPending(ctx context.Context) (events.Pending, error) {
	l.mu.Lock()
	q := l.downQ
	l.mu.Unlock()
	if q == nil {
		return events.Pending{}, errors.New("the downstream outbox at the parent is not open yet")
	}
	return q.Pending(ctx)
}

// sequences tracks, per direction, the highest sequence applied and finds gaps.
type sequences struct {
	l         *Link
	direction string
	q         *events.Queue
	applied   uint64
	checked   time.Time
}

func (l *Link) sequences(direction string, q *events.Queue) *sequences {
	s := &sequences{l: l, direction: direction, q: q}
	if l.cfg.Sequences != nil {
		s.applied = l.cfg.Sequences.LoadSequence(direction)
	}
	return s
}

func (s *sequences) done(seq uint64) {
	if seq > s.applied {
		s.applied = seq
		if s.l.cfg.Sequences != nil {
			s.l.cfg.Sequences.SaveSequence(s.direction, seq)
		}
	}
}

// check reports messages that left the queue without being applied here: every
// sequence between the last applied and the queue's first is gone. An idle link
// asks every gapCheckInterval; one with a batch asks first (force), as the batch
// would otherwise move the last applied sequence past the gap.
func (s *sequences) check(ctx context.Context, force bool) {
	if s.applied == 0 || (!force && time.Since(s.checked) < gapCheckInterval) {
		return
	}
	s.checked = time.Now()
	first, _, err := s.q.Bounds(ctx)
	if err != nil || first <= s.applied+1 {
		return
	}
	lost := first - s.applied - 1
	s.l.cfg.Logger.Warn("link: messages expired before they were applied; reconciling",
		"direction", s.direction, "lost", lost, "after_sequence", s.applied)
	s.done(first - 1)
	if s.l.cfg.OnGap != nil {
		s.l.cfg.OnGap(s.direction, lost)
	}
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
		Sleep(ctx, r.Next())
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

func (l *Link) drain(ctx context.Context, direction string, q *events.Queue, c *Copier) error {
	retries := linkRetries{copy: newRetry(), fetch: NewBackoff(200*time.Millisecond, fetchRetryMax)}
	seqs := l.sequences(direction, q)
	for ctx.Err() == nil {
		if direction == "downstream" {
			l.checkParent()
		}
		wctx, cancel := l.WaitOpen(ctx)
		l.drainBatch(wctx, direction, q, c, retries, seqs)
		cancel()
	}
	return nil
}

// checkParent notes when the parent's process is not the one the link last saw
// (a link cut alone keeps the server id).
func (l *Link) checkParent() {
	if l.cfg.ParentConn == nil {
		return
	}
	id := l.cfg.ParentConn.ConnectedServerId()
	if id == "" {
		return
	}
	l.mu.Lock()
	prev := l.parentID
	l.parentID = id
	if prev != "" && prev != id {
		l.cfg.Logger.Info("link: the parent restarted; reconciling once its queue is drained", "parent", l.cfg.Parent)
		l.restarted = "the parent restarted"
	}
	l.mu.Unlock()
}

// drained is told that the downstream queue was found empty.
func (l *Link) drained() {
	l.mu.Lock()
	why := l.restarted
	l.restarted = ""
	l.mu.Unlock()
	if why != "" && l.cfg.OnRestart != nil {
		l.cfg.OnRestart(why)
	}
}

// linkRetries are a link's two backoffs: after a failed copy, and after a failed
// fetch from its queue.
type linkRetries struct{ copy, fetch *Backoff }

// fetchRetryMax caps the wait after failed fetches. A fetch costs one request, and
// at a root tier it fails while a killed member's queue elects a new leader
// (4 to 9 s): with the copy backoff's 5 s cap, a site waited up to 5 s more after
// the new leader was there. Copy failures do not lengthen it.
const fetchRetryMax = time.Second

// heldRetry is when a message whose tag is held (errHeld) is delivered again.
const heldRetry = 500 * time.Millisecond

// copyJobs is how many copies a link runs at once.
const copyJobs = 4

// drainBatch takes what waits (or waits a poll interval for one message) and applies
// it: events for the same tag or digest collapse into one copy of the source's
// current state (a tag moved ten times is copied once), different ones run
// copyJobs at a time, and a repository delete waits for what came before it.
func (l *Link) drainBatch(ctx context.Context, direction string, q *events.Queue, c *Copier, retries linkRetries, seqs *sequences) {
	ds, err := q.NextBatch(ctx, events.MaxBatch, l.cfg.Poll)
	if err != nil {
		if ctx.Err() == nil {
			l.fail(direction, err)
			Sleep(ctx, retries.fetch.Next())
		}
		return
	}
	retries.fetch.Reset()
	retry := retries.copy
	if len(ds) == 0 {
		l.record(func(s *LinkState) { s.counts(direction).Drained = time.Now().UTC() })
		if direction == "downstream" {
			l.record(func(s *LinkState) { s.LastSync = time.Now().UTC() })
			l.drained()
		}
		seqs.check(ctx, false)
		return
	}
	seqs.check(ctx, true)
	var failed atomic.Bool
	for _, segment := range segments(ds) {
		g := errgroup.Group{}
		g.SetLimit(copyJobs)
		for _, grp := range segment {
			g.Go(func() error {
				if !l.applyGroup(ctx, direction, c, grp, retry) {
					failed.Store(true)
				}
				return nil
			})
		}
		_ = g.Wait()
	}
	var applied uint64
	for _, d := range ds {
		if d.Settled() {
			applied = max(applied, d.Sequence)
		}
	}
	seqs.done(applied)
	if failed.Load() {
		return
	}
	retry.Reset()
	last := ds[len(ds)-1]
	l.record(func(s *LinkState) {
		s.LastActivity, s.LastError = time.Now().UTC(), ""
		if last.Pending == 0 {
			s.counts(direction).Drained = s.LastActivity
		}
		if last.Pending == 0 && direction == "downstream" {
			s.LastSync = s.LastActivity
		}
	})
	if last.Pending == 0 && direction == "downstream" {
		l.drained()
	}
}

// segments splits a batch at repository deletes and groups the rest by what they
// name, in order of first appearance.
func segments(ds []*events.Delivery) [][][]*events.Delivery {
	var out [][][]*events.Delivery
	var cur [][]*events.Delivery
	index := map[string]int{}
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, index = nil, map[string]int{}
	}
	for _, d := range ds {
		e := d.Event
		if e.Action == events.ActionRepositoryDelete {
			flush()
			out = append(out, [][]*events.Delivery{{d}})
			continue
		}
		key := e.Repository + "@" + e.Digest
		if e.Tag != "" {
			key = e.Repository + ":" + e.Tag
		}
		if i, ok := index[key]; ok {
			cur[i] = append(cur[i], d)
			continue
		}
		index[key] = len(cur)
		cur = append(cur, []*events.Delivery{d})
	}
	flush()
	return out
}

// applyGroup applies the latest event of a group once and settles every message of
// the group by the result. It reports success.
func (l *Link) applyGroup(ctx context.Context, direction string, c *Copier, grp []*events.Delivery, retry *Backoff) bool {
	d := grp[len(grp)-1]
	retryAll := func(delay time.Duration) {
		for _, x := range grp {
			_ = x.Retry(delay)
		}
	}
	if open, _ := l.gate(); !open {
		retryAll(0) // the window closed while the batch was on its way
		return true
	}
	if err := l.apply(ctx, grp, c); err != nil {
		if ctx.Err() != nil {
			retryAll(0) // the window closed mid-copy: delivered again next time
			return true
		}
		if errors.Is(err, errHeld) {
			retryAll(heldRetry)
			return true
		}
		l.record(func(s *LinkState) { s.counts(direction).CopyErrors++ })
		l.fail(direction, fmt.Errorf("%s %s %s: %w", d.Event.Action, d.Event.Repository, d.Event.ID, err))
		retryAll(retry.Next())
		return false
	}
	var acked uint64
	for _, x := range grp {
		if err := x.AckAsync(); err != nil {
			l.fail(direction, fmt.Errorf("ack %s: %w", x.Event.ID, err))
			continue
		}
		acked++
	}
	// Counted as each group completes, so that progress shows within a batch.
	l.record(func(s *LinkState) { s.counts(direction).Applied += acked })
	l.cfg.Logger.Debug("link: applied", "direction", direction, "action", d.Event.Action,
		"repository", d.Event.Repository, "tag", d.Event.Tag, "digest", d.Event.Digest, "coalesced", len(grp))
	return true
}

// apply copies the latest event of a group's content, telling the server its
// messages are still being worked on while a large copy runs.
func (l *Link) apply(ctx context.Context, grp []*events.Delivery, c *Copier) error {
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
				for _, d := range grp {
					_ = d.InProgress()
				}
			}
		}
	}()
	e := grp[len(grp)-1].Event
	return c.Apply(WithOrigin(ctx, e.Origin), e)
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
