package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// What nats-server v2.15.2 does with a damaged EVENTS block file, tried here: a block
// cut short, or one with a flipped byte, is rebuilt from what still parses, and
// nothing is logged or reported (StreamState.Lost stays nil). Either the lost tail
// shows as deleted sequences with the stream's last sequence unchanged, or the last
// sequence goes back to the last good message, so that the next events reuse
// sequences consumers have already acknowledged, and they would skip them. A removed
// or empty block file leaves an empty stream. So the log checks itself at open:
//
//   - The log keeps a record of the last sequence it stored (RecordFile, written
//     at most every RecordInterval and on Close). A stream that ends before it lost
//     its tail.
//   - No event can expire sooner than MinMessageTTL after it was stored, and nothing
//     else removes events. A run of missing sequences right after an event younger
//     than that was lost, not expired; so was the last event if it is missing and
//     younger than that.
//
// A damaged log stays damaged (Damage, and the node unready) until an operator
// acknowledges the loss (AcknowledgeDamage); while its sequence went back, publishing
// is refused, as consumers would skip what it stored.

// ErrLogDamaged is returned by Publish while the log's sequence went back after damage.
var ErrLogDamaged = errors.New("event log damaged")

// Damage is what the check at open found lost.
type Damage struct {
	// Lost are the runs of sequences that are gone.
	Lost []SeqRange `json:"lost"`
	// Regressed says the stream's last sequence went back to Last from Recorded.
	Regressed bool      `json:"regressed,omitempty"`
	Last      uint64    `json:"last"`
	Recorded  uint64    `json:"recorded,omitempty"`
	Found     time.Time `json:"found"`
}

// SeqRange is a run of sequences, First to Last inclusive.
type SeqRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// Count is how many events the damage lost.
func (d *Damage) Count() uint64 {
	var n uint64
	for _, r := range d.Lost {
		n += r.Last - r.First + 1
	}
	return n
}

// Error says what was lost and what to do.
func (d *Damage) Error() string {
	var runs []string
	for i, r := range d.Lost {
		if i == 5 {
			runs = append(runs, fmt.Sprintf("and %d more runs", len(d.Lost)-5))
			break
		}
		if r.First == r.Last {
			runs = append(runs, fmt.Sprint(r.First))
		} else {
			runs = append(runs, fmt.Sprintf("%d-%d", r.First, r.Last))
		}
	}
	msg := fmt.Sprintf("event log %s damaged on disk: %d events lost (sequences %s)", StreamName, d.Count(), strings.Join(runs, ", "))
	if d.Regressed {
		msg += fmt.Sprintf("; the log now ends at %d instead of %d, so publishing is refused", d.Last, d.Recorded)
	}
	return msg + "; stored content is intact, but neighbours may have missed the changes these events carried: " +
		"run `outpost node resync <node>` at the root for this node and its children, then `outpost events repair --ack-loss` here"
}

// logRecord is what RecordFile holds.
type logRecord struct {
	LastSeq uint64    `json:"lastSeq"`
	Time    time.Time `json:"time"`
	// Acknowledged: an operator acknowledged the loss of events up to here.
	Acknowledged uint64 `json:"acknowledged,omitempty"`
}

// recorder keeps RecordFile up to date with the highest sequence stored.
type recorder struct {
	file  string
	mu    sync.Mutex
	seen  uint64 // highest sequence published
	kept  uint64 // highest sequence in the file
	acked uint64 // losses up to here are acknowledged
	stop  chan struct{}
	done  chan struct{}
}

func readRecord(file string) (logRecord, error) {
	var rec logRecord
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%s: %w", file, err)
	}
	return rec, nil
}

func (r *recorder) saw(seq uint64) {
	r.mu.Lock()
	r.seen = max(r.seen, seq)
	r.mu.Unlock()
}

// acknowledge records seq as the last one (also lower than before) and losses up
// to it as known.
func (r *recorder) acknowledge(seq uint64) error {
	r.mu.Lock()
	r.seen, r.acked = seq, seq
	r.kept = seq + 1 // differs: forces the write
	r.mu.Unlock()
	return r.flush()
}

func (r *recorder) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == r.kept {
		return nil
	}
	b, _ := json.Marshal(logRecord{LastSeq: r.seen, Time: time.Now().UTC(), Acknowledged: r.acked})
	tmp := r.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("event log record: %w", err)
	}
	if err := os.Rename(tmp, r.file); err != nil {
		return fmt.Errorf("event log record: %w", err)
	}
	r.kept = r.seen
	return nil
}

func (r *recorder) run(every time.Duration) {
	defer close(r.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			_ = r.flush() // retried at the next tick; Close reports it
		}
	}
}

// maxGapChecks bounds how many runs of missing sequences the check looks at: each
// costs a message read.
const maxGapChecks = 1000

// check compares the stream with the record and with what expiry can explain.
func (l *Log) check(ctx context.Context, rec logRecord) (*Damage, error) {
	info, err := l.stream.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return nil, fmt.Errorf("check event log: %w", err)
	}
	st := info.State
	now := l.cfg.Now()
	d := &Damage{Last: st.LastSeq, Found: now.UTC()}
	if rec.LastSeq > st.LastSeq {
		d.Regressed, d.Recorded = true, rec.LastSeq
		d.Lost = append(d.Lost, SeqRange{First: st.LastSeq + 1, Last: rec.LastSeq})
	}
	young := func(seq uint64) bool {
		m, err := l.stream.GetMsg(ctx, seq)
		return err == nil && now.Sub(m.Time) < MinMessageTTL
	}
	// The last event is missing, and too young to have expired: the stream lost
	// everything up to it (what of it had expired anyway is not known).
	if st.LastSeq > 0 && st.FirstSeq > st.LastSeq && now.Sub(st.LastTime) < MinMessageTTL {
		d.Lost = append(d.Lost, SeqRange{First: 1, Last: st.LastSeq})
	}
	// Runs of deleted sequences inside the stream, after a young event.
	var runs []SeqRange
	for _, s := range st.Deleted {
		if n := len(runs); n > 0 && runs[n-1].Last+1 == s {
			runs[n-1].Last = s
			continue
		}
		runs = append(runs, SeqRange{First: s, Last: s})
	}
	for i, r := range runs {
		if i == maxGapChecks {
			break
		}
		if r.First > st.FirstSeq && young(r.First-1) {
			d.Lost = append(d.Lost, r)
		}
	}
	// Events the stream counts but does not deliver: a block whose checksum fails
	// is skipped on reading, silently, and nothing else says so.
	undelivered, err := l.undelivered(ctx, st.FirstSeq, st.LastSeq, st.Deleted)
	if err != nil {
		return nil, err
	}
	d.Lost = append(d.Lost, undelivered...)
	// What an operator acknowledged is not reported again.
	var lost []SeqRange
	for _, r := range d.Lost {
		if r.Last > rec.Acknowledged {
			r.First = max(r.First, rec.Acknowledged+1)
			lost = append(lost, r)
		}
	}
	if d.Lost = lost; len(d.Lost) == 0 {
		return nil, nil
	}
	sortRanges(d.Lost)
	return d, nil
}

// undelivered reads the whole log once and returns the runs of sequences from first
// to last that are neither deleted nor delivered. The read is bounded by
// VerifyTimeout; what it did not reach is not judged.
func (l *Log) undelivered(ctx context.Context, first, last uint64, deleted []uint64) ([]SeqRange, error) {
	if last < first || l.cfg.VerifyTimeout < 0 {
		return nil, nil
	}
	gone := make(map[uint64]bool, len(deleted))
	for _, s := range deleted {
		gone[s] = true
	}
	var runs []SeqRange
	next := first
	miss := func(upTo uint64) {
		for s := next; s < upTo; s++ {
			if gone[s] {
				continue
			}
			if n := len(runs); n > 0 && runs[n-1].Last+1 == s {
				runs[n-1].Last = s
			} else {
				runs = append(runs, SeqRange{First: s, Last: s})
			}
		}
	}
	vctx, cancel := context.WithTimeout(ctx, l.cfg.VerifyTimeout)
	defer cancel()
	err := l.Read(vctx, ReadOptions{}, func(e *Event) error {
		miss(e.Sequence)
		next = e.Sequence + 1
		return nil
	})
	switch {
	case vctx.Err() != nil && ctx.Err() == nil:
		return runs, nil // took too long: judge what was read
	case errors.Is(err, ErrReadStalled):
	case err != nil:
		return nil, fmt.Errorf("verify event log: %w", err)
	}
	miss(last + 1)
	return runs, nil
}

func sortRanges(rs []SeqRange) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].First < rs[j-1].First; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// Damage is what the check at open found and no operator acknowledged yet, or nil.
func (l *Log) Damage() *Damage { return l.damage.Load() }

// AcknowledgeDamage is the operator's answer to a damaged log: the loss is known
// (and the neighbours resynced). A log whose sequence went back is moved forward
// past the recorded sequence (what little it still holds before that goes), so that
// consumers see new events again; the record then follows the stream.
func (l *Log) AcknowledgeDamage(ctx context.Context) (*Damage, error) {
	d := l.damage.Load()
	if d == nil {
		return nil, nil
	}
	if d.Regressed {
		if err := l.stream.Purge(ctx, jetstream.WithPurgeSequence(d.Recorded+1)); err != nil {
			return d, fmt.Errorf("repair event log: move past sequence %d: %w", d.Recorded, err)
		}
	}
	st, err := l.Stats(ctx)
	if err != nil {
		return d, fmt.Errorf("repair event log: %w", err)
	}
	if l.rec != nil {
		if err := l.rec.acknowledge(st.LastSeq); err != nil {
			return d, fmt.Errorf("repair event log: %w", err)
		}
	}
	l.damage.Store(nil)
	return d, nil
}

// Close writes the record of the last sequence stored.
func (l *Log) Close() error {
	if l.rec == nil {
		return nil
	}
	select {
	case <-l.rec.stop:
	default:
		close(l.rec.stop)
	}
	<-l.rec.done
	return l.rec.flush()
}
