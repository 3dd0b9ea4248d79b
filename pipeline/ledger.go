package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"
)

// The root's order decides what a tag holds: every change applied at a parent is
// sent to every child in scope, the one it came from included, and each child
// applies the parent's current state. A write made at a node (or in its subtree)
// that the parent ordered before another one is lost: the Ledger makes that
// visible, and keeps a write from being undone before the parent has ordered it.
//
// The rule. A tag write at this node that did not come from the parent (a client's,
// or a child's through its upstream copy) is pending. Until the upstream copy has
// offered it to the parent, the downstream copy leaves it in place: a change from
// the parent that was ordered before it must not undo it (the message is delivered
// again until the parent has ordered the write). It is confirmed when a copy either
// way finds the parent holding the same. If a change from the parent replaces it
// with something else before it was confirmed, or within ConflictWindow of being
// made, the parent ordered another write after it that was made without knowing
// it: it was overwritten, a Conflict (log line, counter, status detail) at this
// node. A write overwritten later than that is taken for an ordinary update. A
// write not offered within HoldFor, or that the upstream copy failed to offer three
// times (the parent refuses it, or it is broken here), is no longer held, and is
// reported when replaced.
//
// The ledger is in memory: a write still pending when the node restarts is not
// held nor reported. It holds at most maxPending tags; past that, new writes are
// not tracked.

// maxPending bounds the ledger (a link closed for days may leave many writes
// pending).
const maxPending = 1 << 16

// Conflict is a write at this node or its subtree that the parent's order
// overwrote.
type Conflict struct {
	Repository, Tag string
	// Lost is the digest the overwritten write set ("" for a tag delete), made at
	// LostOrigin.
	Lost, LostOrigin string
	// Won is what the parent holds instead ("" when the parent deleted the tag),
	// first written at WonOrigin.
	Won, WonOrigin string
	Time           time.Time
}

// Kind names what happened to the overwritten write, the counter's label.
func (c Conflict) Kind() string {
	switch {
	case c.Lost == "":
		return "delete-undone"
	case c.Won == "":
		return "deleted"
	}
	return "replaced"
}

// LedgerConfig configures a Ledger.
type LedgerConfig struct {
	// Parent is the parent's node name: changes it delivered decide.
	Parent string
	// Conflicts counts overwritten writes by kind; nil counts nothing.
	Conflicts *prometheus.CounterVec
	// LogEnd reads the last sequence of the node's event log, so that a question
	// about a tag waits until the router has shown the ledger every event stored
	// before it (at most RouterLag); nil: never wait.
	LogEnd func(ctx context.Context) (uint64, error)
	// RouterLag bounds that wait; default 2 s.
	RouterLag time.Duration
	// HoldFor is how long a write not yet offered to the parent is kept from being
	// replaced by it; default 10 minutes.
	HoldFor time.Duration
	// ConflictWindow is how long after it was made a confirmed write still counts
	// as overwritten when the parent's state replaces it; default 1 minute.
	ConflictWindow time.Duration
	// Now is the clock conflicts are stamped and holds timed with; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultLedgerConfig is the ledger's timing.
func DefaultLedgerConfig() LedgerConfig {
	return LedgerConfig{RouterLag: 2 * time.Second, HoldFor: 10 * time.Minute, ConflictWindow: time.Minute, Now: time.Now}
}

// Ledger keeps the tag writes made at this node or its subtree that the parent has
// not confirmed yet, and reports those the parent's order overwrote.
type Ledger struct {
	cfg LedgerConfig

	mu      sync.Mutex
	pending map[string]pendingWrite // by repository:tag
	routed  uint64                  // the last log sequence the router showed
	count   uint64
	last    Conflict
}

type pendingWrite struct {
	digest, origin string
	at             time.Time // when the router saw it
	offered        bool      // the upstream copy gave it to the parent
	confirmed      bool      // the parent was seen holding it
	failures       int       // upstream copies of the tag that failed since
}

// maxUpstreamFailures ends a hold: a write the upstream copy fails to give the
// parent this many times (the parent refuses it, or it is broken here) is not kept
// from the parent's state any longer.
const maxUpstreamFailures = 3

// settled says the write is confirmed and older than the conflict window: the
// ledger has nothing more to say about it.
func (l *Ledger) settled(p pendingWrite) bool {
	return p.confirmed && l.cfg.Now().Sub(p.at) >= l.cfg.ConflictWindow
}

// NewLedger returns an empty ledger; zero timings take DefaultLedgerConfig's.
func NewLedger(cfg LedgerConfig) *Ledger {
	def := DefaultLedgerConfig()
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.RouterLag <= 0 {
		cfg.RouterLag = def.RouterLag
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = def.HoldFor
	}
	if cfg.ConflictWindow <= 0 {
		cfg.ConflictWindow = def.ConflictWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Ledger{cfg: cfg, pending: map[string]pendingWrite{}}
}

// Conflicts returns how many writes were overwritten since start and the last one.
func (l *Ledger) Conflicts() (uint64, Conflict) {
	if l == nil {
		return 0, Conflict{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count, l.last
}

// Routed says the router has shown every event up to seq (at its start: what it
// routed before).
func (l *Ledger) Routed(seq uint64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.routed = max(l.routed, seq)
}

// Observe reads one event of the node's log, in log order (the router's).
func (l *Ledger) Observe(e *events.Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	replay := e.Sequence != 0 && e.Sequence <= l.routed
	l.mu.Unlock()
	if replay {
		// Shown already: delivered again (an ack lost, or the process restarted after
		// routing it). Taken again, a write sent up long ago would be held as unsent
		// for HoldFor, as the upstream message is not appended twice.
		return
	}
	defer l.Routed(e.Sequence)
	fromParent := e.From != "" && e.From == l.cfg.Parent
	switch {
	case e.Action == events.ActionRepositoryDelete:
		l.repositoryDeleted(e, fromParent)
	case e.Tag == "" || (e.Action != events.ActionPush && e.Action != events.ActionTagDelete):
	case fromParent:
		l.parentChanged(e)
	default:
		l.localWrite(e)
	}
}

// state is what a tag holds after e: its digest, or "" once deleted.
func state(e *events.Event) string {
	if e.Action == events.ActionTagDelete {
		return ""
	}
	return e.Digest
}

func key(repo, tag string) string { return repo + ":" + tag }

func (l *Ledger) localWrite(e *events.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(e.Repository, e.Tag)
	if _, ok := l.pending[k]; !ok && len(l.pending) >= maxPending {
		for k, p := range l.pending {
			if l.settled(p) {
				delete(l.pending, k)
			}
		}
		if len(l.pending) >= maxPending {
			return
		}
	}
	origin := e.Origin
	if origin == "" {
		origin = e.From
	}
	l.pending[k] = pendingWrite{digest: state(e), origin: origin, at: l.cfg.Now()}
}

// Offered says the upstream copy gave the parent digest ("" for a delete) for the
// tag: from now on the parent's order decides.
func (l *Ledger) Offered(repo, tag, digest string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(repo, tag)
	if p, ok := l.pending[k]; ok && p.digest == digest {
		p.offered = true
		l.pending[k] = p
	}
}

// Failed says an upstream copy of the tag failed.
func (l *Ledger) Failed(repo, tag string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(repo, tag)
	if p, ok := l.pending[k]; ok {
		p.failures++
		l.pending[k] = p
	}
}

// Hold says whether the downstream copy must leave the tag as it is here
// (current, "" for absent): it was written here or below and not yet offered to
// the parent, which has not ordered it yet. It first waits (up to RouterLag) until
// the router has shown every event the log held, and holds if it has not.
func (l *Ledger) Hold(ctx context.Context, repo, tag, current string) bool {
	if l == nil {
		return false
	}
	if !l.waitRouted(ctx) {
		// The write this tag holds may be in the part of the log the router has
		// not shown yet: replacing it now would undo a client's push before it was
		// sent up. The message comes again.
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pending[key(repo, tag)]
	return ok && !p.offered && !p.confirmed && p.digest == current && l.cfg.Now().Sub(p.at) < l.cfg.HoldFor &&
		p.failures < maxUpstreamFailures
}

// Unsent says whether the tag holds a write here that was not offered to the
// parent: a reconcile sends it up rather than replacing it.
func (l *Ledger) Unsent(repo, tag string) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pending[key(repo, tag)]
	return ok && !p.offered && !p.confirmed && l.cfg.Now().Sub(p.at) < l.cfg.HoldFor && p.failures < maxUpstreamFailures
}

// waitRouted waits (up to RouterLag) until the router has shown the ledger every
// event the log held when it was called, and says whether it has.
func (l *Ledger) waitRouted(ctx context.Context) bool {
	if l.cfg.LogEnd == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RouterLag)
	defer cancel()
	end, err := l.cfg.LogEnd(ctx)
	if err != nil {
		l.cfg.Logger.Debug("ledger: read the log's end", "err", err)
		return false
	}
	for {
		l.mu.Lock()
		routed := l.routed
		l.mu.Unlock()
		if routed >= end {
			return true
		}
		Sleep(ctx, 5*time.Millisecond)
		if ctx.Err() != nil {
			l.cfg.Logger.Debug("ledger: the router is behind the log", "routed", routed, "log_end", end)
			return false
		}
	}
}

// Confirm says the parent was seen holding digest ("" for absent) for the tag, the
// same as this node: a write here that set it is no longer at risk.
func (l *Ledger) Confirm(repo, tag, digest string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(repo, tag)
	if p, ok := l.pending[k]; ok && p.digest == digest {
		p.confirmed = true
		l.pending[k] = p
		if l.settled(p) {
			delete(l.pending, k)
		}
	}
}

func (l *Ledger) parentChanged(e *events.Event) {
	l.mu.Lock()
	k := key(e.Repository, e.Tag)
	p, ok := l.pending[k]
	if ok && p.digest == state(e) {
		p.confirmed = true
		l.pending[k] = p
		ok = false
	} else {
		delete(l.pending, k)
		ok = ok && !l.settled(p)
	}
	l.mu.Unlock()
	if !ok {
		return
	}
	l.report(Conflict{Repository: e.Repository, Tag: e.Tag, Lost: p.digest, LostOrigin: p.origin,
		Won: state(e), WonOrigin: e.Origin})
}

// repositoryDeleted: a repository delete from the parent overwrote every pending
// write in it; a local one replaces them (its own events follow up the tree).
func (l *Ledger) repositoryDeleted(e *events.Event, fromParent bool) {
	prefix := e.Repository + ":"
	var lost []Conflict
	l.mu.Lock()
	for k, p := range l.pending {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			delete(l.pending, k)
			if fromParent && p.digest != "" && !l.settled(p) {
				lost = append(lost, Conflict{Repository: e.Repository, Tag: k[len(prefix):], Lost: p.digest,
					LostOrigin: p.origin, WonOrigin: e.Origin})
			}
		}
	}
	l.mu.Unlock()
	for _, c := range lost {
		l.report(c)
	}
}

func (l *Ledger) report(c Conflict) {
	c.Time = l.cfg.Now().UTC()
	l.mu.Lock()
	l.count++
	l.last = c
	l.mu.Unlock()
	if l.cfg.Conflicts != nil {
		l.cfg.Conflicts.WithLabelValues(c.Kind()).Inc()
	}
	l.cfg.Logger.Warn("tag conflict: a write here was overwritten by the parent's order",
		"ref", c.Repository+":"+c.Tag, "lost", orAbsent(c.Lost), "lost_origin", c.LostOrigin,
		"won", orAbsent(c.Won), "won_origin", c.WonOrigin, "decided_by", l.cfg.Parent, "kind", c.Kind())
}

func orAbsent(d string) string {
	if d == "" {
		return "(deleted)"
	}
	return d
}

// String is the conflict in one line, for status details.
func (c Conflict) String() string {
	return c.Repository + ":" + c.Tag + " " + orAbsent(c.Lost) + " (written at " + c.LostOrigin + ") replaced by " +
		orAbsent(c.Won) + " (from " + c.WonOrigin + ")"
}
