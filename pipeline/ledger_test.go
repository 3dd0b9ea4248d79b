package pipeline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/events"
)

type ledgerFixture struct {
	l       *Ledger
	now     time.Time
	counter *prometheus.CounterVec
	logs    bytes.Buffer
	seq     uint64
}

func newLedgerFixture(t *testing.T) *ledgerFixture {
	t.Helper()
	f := &ledgerFixture{now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	f.counter = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"kind"})
	f.l = NewLedger(LedgerConfig{Parent: "root", Conflicts: f.counter, Now: func() time.Time { return f.now },
		Logger: slog.New(slog.NewTextHandler(&f.logs, nil))})
	return f
}

// event shows the ledger one event: from "" (a client here), a child's name, or
// "root" (the parent).
func (f *ledgerFixture) event(action events.Action, tag, digest, from string) {
	f.seq++
	origin := from
	if origin == "" {
		origin = "self"
	}
	f.l.Observe(&events.Event{Action: action, Repository: "r", Tag: tag, Digest: digest, From: from, Origin: origin, Sequence: f.seq})
}

func (f *ledgerFixture) conflicts(kind string) int {
	return int(testutil.ToFloat64(f.counter.WithLabelValues(kind)))
}

func TestLedgerReportsAWriteReplacedBeforeTheParentConfirmedIt(t *testing.T) {
	f := newLedgerFixture(t)
	f.event(events.ActionPush, "t", "dA", "")
	f.l.Offered("r", "t", "dA")
	f.event(events.ActionPush, "t", "dB", "root")
	if got := f.conflicts("replaced"); got != 1 {
		t.Fatalf("conflicts = %d, want 1", got)
	}
	n, c := f.l.Conflicts()
	if n != 1 || c.Lost != "dA" || c.Won != "dB" || c.LostOrigin != "self" || c.WonOrigin != "root" || !c.Time.Equal(f.now) {
		t.Errorf("Conflicts() = %d, %+v", n, c)
	}
	for _, want := range []string{"level=WARN", "ref=r:t", "lost=dA", "won=dB", "decided_by=root"} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, f.logs.String())
		}
	}
	// Reported once: the next change from the parent finds nothing pending.
	f.event(events.ActionPush, "t", "dC", "root")
	if got := f.conflicts("replaced"); got != 1 {
		t.Errorf("conflicts after a second change = %d, want 1", got)
	}
}

func TestLedgerConflictWindow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration
		want  int
	}{
		{"confirmed, replaced within the window", 30 * time.Second, 1},
		{"confirmed, replaced after the window: an ordinary update", 2 * time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLedgerFixture(t)
			f.event(events.ActionPush, "t", "dA", "")
			f.l.Offered("r", "t", "dA")
			f.l.Confirm("r", "t", "dA")
			f.now = f.now.Add(tc.after)
			f.event(events.ActionPush, "t", "dB", "root")
			if got := f.conflicts("replaced"); got != tc.want {
				t.Errorf("conflicts = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestLedgerKindsAndSources(t *testing.T) {
	for _, tc := range []struct {
		name       string
		local      events.Action
		localFrom  string
		parent     events.Action
		wantKind   string
		wantReport bool
	}{
		{"a child's write replaced", events.ActionPush, "child", events.ActionPush, "replaced", true},
		{"a push deleted by the parent", events.ActionPush, "", events.ActionTagDelete, "deleted", true},
		{"a delete undone by the parent", events.ActionTagDelete, "", events.ActionPush, "delete-undone", true},
		{"the parent's own change is no conflict", events.ActionPush, "root", events.ActionPush, "replaced", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLedgerFixture(t)
			f.event(tc.local, "t", "dA", tc.localFrom)
			f.event(tc.parent, "t", "dB", "root")
			got := f.conflicts(tc.wantKind)
			if (got == 1) != tc.wantReport {
				t.Errorf("%s conflicts = %d, want report %v", tc.wantKind, got, tc.wantReport)
			}
		})
	}
	t.Run("a repository delete from the parent", func(t *testing.T) {
		f := newLedgerFixture(t)
		f.event(events.ActionPush, "t1", "dA", "")
		f.event(events.ActionPush, "t2", "dB", "child")
		f.l.Observe(&events.Event{Action: events.ActionRepositoryDelete, Repository: "r", From: "root", Origin: "root"})
		if got := f.conflicts("deleted"); got != 2 {
			t.Errorf("deleted conflicts = %d, want 2", got)
		}
	})
	t.Run("the parent confirming by the same change", func(t *testing.T) {
		f := newLedgerFixture(t)
		f.event(events.ActionPush, "t", "dA", "")
		f.event(events.ActionPush, "t", "dA", "root")
		f.now = f.now.Add(2 * time.Minute)
		f.event(events.ActionPush, "t", "dB", "root")
		if got := f.conflicts("replaced"); got != 0 {
			t.Errorf("conflicts = %d, want 0", got)
		}
	})
}

func TestLedgerHoldsAWriteUntilItIsOffered(t *testing.T) {
	ctx := context.Background()
	f := newLedgerFixture(t)
	f.event(events.ActionPush, "t", "dA", "")
	if !f.l.Hold(ctx, "r", "t", "dA") || !f.l.Unsent("r", "t") {
		t.Fatal("a write not yet offered is not held")
	}
	if f.l.Hold(ctx, "r", "t", "dOther") {
		t.Error("held a tag that no longer holds the pending write")
	}
	f.l.Offered("r", "t", "dA")
	if f.l.Hold(ctx, "r", "t", "dA") || f.l.Unsent("r", "t") {
		t.Error("a write offered to the parent is still held")
	}
	f.event(events.ActionPush, "v", "dV", "")
	for range 3 {
		f.l.Failed("r", "v")
	}
	if f.l.Hold(ctx, "r", "v", "dV") || f.l.Unsent("r", "v") {
		t.Error("a write the upstream failed to offer three times is still held")
	}
	f.event(events.ActionTagDelete, "u", "dX", "")
	if !f.l.Hold(ctx, "r", "u", "") {
		t.Error("a delete not yet offered is not held")
	}
	f.now = f.now.Add(11 * time.Minute)
	if f.l.Hold(ctx, "r", "u", "") {
		t.Error("a write is held past HoldFor")
	}
}

func TestLedgerHoldWaitsForTheRouter(t *testing.T) {
	var end atomic.Uint64
	l := NewLedger(LedgerConfig{Parent: "root", LogEnd: func(context.Context) (uint64, error) { return end.Load(), nil }})
	l.Routed(4)
	end.Store(5) // the write is stored and in the log; the router has not shown it yet
	go func() {
		time.Sleep(100 * time.Millisecond)
		l.Observe(&events.Event{Action: events.ActionPush, Repository: "r", Tag: "t", Digest: "dA", Sequence: 5})
	}()
	start := time.Now()
	if !l.Hold(context.Background(), "r", "t", "dA") {
		t.Fatal("Hold answered before the router showed the write")
	}
	if waited := time.Since(start); waited < 90*time.Millisecond || waited > time.Second {
		t.Errorf("Hold waited %s, want about 100ms", waited)
	}
}

// A router further behind than RouterLag may not have shown a write the tag holds:
// Hold keeps the tag (the message comes again) rather than undo the write.
func TestLedgerHoldsWhileTheRouterIsBehind(t *testing.T) {
	var end atomic.Uint64
	var logEndErr error
	l := NewLedger(LedgerConfig{Parent: "root", RouterLag: 50 * time.Millisecond,
		LogEnd: func(context.Context) (uint64, error) { return end.Load(), logEndErr }})
	l.Routed(4)
	end.Store(5) // a client's write, stored and in the log; the router is stuck before it
	if !l.Hold(context.Background(), "r", "t", "dA") {
		t.Fatal("Hold let the parent's state replace a tag whose write the router has not shown")
	}
	l.Observe(&events.Event{Action: events.ActionPush, Repository: "r", Tag: "t", Digest: "dA", Sequence: 5})
	l.Offered("r", "t", "dA")
	if l.Hold(context.Background(), "r", "t", "dA") {
		t.Error("Hold kept an offered write once the router caught up")
	}
	logEndErr = errors.New("jetstream unavailable")
	if !l.Hold(context.Background(), "r", "t", "dA") {
		t.Error("Hold answered without knowing the log's end")
	}
}

func TestRefLocksSerializeOneTagAndExcludeRepositoryDeletes(t *testing.T) {
	l := newRefLocks()
	var inside, most atomic.Int32
	done := make(chan struct{})
	for range 8 {
		go func() {
			unlock := l.tag("r", "t")
			if n := inside.Add(1); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			unlock()
			done <- struct{}{}
		}()
	}
	for range 8 {
		<-done
	}
	if most.Load() != 1 {
		t.Errorf("%d copies of one tag ran at once", most.Load())
	}
	other := l.tag("r", "u") // another tag of the repository is not held up
	unlockRepo := make(chan func())
	go func() { unlockRepo <- l.repository("r") }()
	select {
	case <-unlockRepo:
		t.Fatal("a repository delete ran beside a tag copy")
	case <-time.After(50 * time.Millisecond):
	}
	other()
	(<-unlockRepo)()
	if len(l.repos) != 0 {
		t.Errorf("locks left behind: %v", l.repos)
	}
}

// An event delivered again to the router (a lost ack, or a restart after it was
// routed) is not a new write: it is neither held again nor reported twice.
func TestLedgerIgnoresEventsShownBefore(t *testing.T) {
	ctx := context.Background()
	f := newLedgerFixture(t)
	f.event(events.ActionPush, "t", "dA", "")
	f.l.Offered("r", "t", "dA")
	seq := f.seq
	f.l.Observe(&events.Event{Action: events.ActionPush, Repository: "r", Tag: "t", Digest: "dA", Origin: "self", Sequence: seq})
	if f.l.Hold(ctx, "r", "t", "dA") {
		t.Error("a write delivered again to the router is held as unsent")
	}
	// A new process: the router starts past what the last one routed.
	g := newLedgerFixture(t)
	g.l.Routed(7)
	g.l.Observe(&events.Event{Action: events.ActionPush, Repository: "r", Tag: "u", Digest: "dB", Origin: "self", Sequence: 6})
	if g.l.Hold(ctx, "r", "u", "dB") || g.l.Unsent("r", "u") {
		t.Error("a write routed before the restart is held as unsent")
	}
	g.l.Observe(&events.Event{Action: events.ActionPush, Repository: "r", Tag: "u", Digest: "dC", Origin: "self", Sequence: 8})
	if !g.l.Hold(ctx, "r", "u", "dC") {
		t.Error("a new write after the restart is not held")
	}
}
