package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// damagedLog is a log in dir with n events, the server stopped, and its block file
// handed to damage; then the log is opened again with its record.
func damagedLog(t *testing.T, n int, damage func(blk string)) (*Log, string) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	record := filepath.Join(dir, "events-log.json")
	open := func() (*Log, *Server) {
		s, err := StartServer(ServerConfig{Dir: filepath.Join(dir, "nats"), Addr: "127.0.0.1:0", Name: "logtest"})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := s.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLog(ctx, nc, LogConfig{RecordFile: record, ReadIdle: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(); nc.Close(); s.Shutdown() })
		return l, s
	}
	l, s := open()
	for i := range n {
		if err := l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	if d := l.Damage(); d != nil {
		t.Fatalf("a fresh log is damaged: %v", d)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	blk := filepath.Join(dir, "nats/jetstream/$G/streams", StreamName, "msgs/1.blk")
	damage(blk)
	l, _ = open()
	return l, dir
}

func readAll(t *testing.T, l *Log) (int, error, time.Duration) {
	t.Helper()
	start := time.Now()
	n := 0
	err := l.Read(context.Background(), ReadOptions{}, func(*Event) error { n++; return nil })
	return n, err, time.Since(start)
}

// TestDamagedLogIsFoundAtOpen: every way a block file can be damaged (cut in half,
// a byte flipped, emptied, removed) is found at open with the sequences lost; a
// read answers at once with what remains; after the operator acknowledges, the log
// is healthy, takes events again with sequences past the old ones, and stays so
// across a restart.
func TestDamagedLogIsFoundAtOpen(t *testing.T) {
	const events = 50
	for _, tc := range []struct {
		name      string
		damage    func(t *testing.T, blk string)
		regressed bool
		stalls    bool // the stream counts an event it never delivers, last
	}{
		{"truncated", func(t *testing.T, blk string) {
			fi, err := os.Stat(blk)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(blk, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"flipped", func(t *testing.T, blk string) {
			b, err := os.ReadFile(blk)
			if err != nil {
				t.Fatal(err)
			}
			// A byte of one event's payload in the middle: its checksum fails. (A
			// flipped sequence field instead makes nats-server v2.15.2 fill a
			// made-up hole of millions of sequences at start, for minutes.)
			i := bytes.Index(b, []byte(`"tag":"25"`))
			if i < 0 {
				t.Fatal("event 25 not found in the block file")
			}
			b[i+7] ^= 0x01
			if err := os.WriteFile(blk, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"last event flipped", func(t *testing.T, blk string) {
			b, err := os.ReadFile(blk)
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(b, []byte(fmt.Sprintf(`"tag":"%d"`, events-1)))
			if i < 0 {
				t.Fatal("the last event not found in the block file")
			}
			b[i+7] ^= 0x01
			if err := os.WriteFile(blk, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, true},
		{"truncated, index gone", func(t *testing.T, blk string) {
			// The store's own summary gone too: the stream is rebuilt from the
			// block and ends at its last whole event, before the recorded one.
			fi, err := os.Stat(blk)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(blk, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(filepath.Dir(blk), "index.db")); err != nil {
				t.Fatal(err)
			}
		}, true, false},
		{"emptied", func(t *testing.T, blk string) {
			if err := os.Truncate(blk, 0); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"removed", func(t *testing.T, blk string) {
			if err := os.Remove(blk); err != nil {
				t.Fatal(err)
			}
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l, _ := damagedLog(t, events, func(blk string) { tc.damage(t, blk) })
			d := l.Damage()
			if d == nil {
				t.Fatal("damage not found at open")
			}
			got, err, took := readAll(t, l)
			if took > 3*time.Second {
				t.Errorf("read took %s", took)
			}
			if tc.stalls != errors.Is(err, ErrReadStalled) || (!tc.stalls && err != nil) {
				t.Errorf("read: %v; want a stalled read only when the stream counts an event it cannot deliver", err)
			}
			if d.Count()+uint64(got) != events {
				t.Errorf("damage says %d lost, read finds %d: want %d together (%v)", d.Count(), got, events, d)
			}
			if d.Regressed != tc.regressed {
				t.Errorf("regressed %v, want %v", d.Regressed, tc.regressed)
			}
			msg := d.Error()
			for _, want := range []string{"EVENTS damaged", fmt.Sprintf("%d events lost", d.Count()), "outpost events repair --ack-loss", "outpost node resync"} {
				if !strings.Contains(msg, want) {
					t.Errorf("damage message %q does not say %q", msg, want)
				}
			}
			err = l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: "new", Digest: "sha256:00"})
			if tc.regressed != errors.Is(err, ErrLogDamaged) {
				t.Errorf("publish while damaged: %v; want refused only when the sequence went back", err)
			}
			if _, err := l.AcknowledgeDamage(ctx); err != nil {
				t.Fatal(err)
			}
			if l.Damage() != nil {
				t.Fatal("still damaged after acknowledging")
			}
			e := &Event{Action: ActionPush, Repository: "app", Tag: "after", Digest: "sha256:00"}
			if err := l.Publish(ctx, e); err != nil {
				t.Fatal(err)
			}
			if e.Sequence <= events {
				t.Errorf("first event after repair has sequence %d, want past %d", e.Sequence, events)
			}
		})
	}
}

// TestRepairedLogStaysHealthyAcrossRestart: the acknowledgement is recorded, so the
// same damage is not reported again.
func TestRepairedLogStaysHealthyAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	record := filepath.Join(dir, "events-log.json")
	open := func() (*Log, func()) {
		s, err := StartServer(ServerConfig{Dir: filepath.Join(dir, "nats"), Addr: "127.0.0.1:0", Name: "logtest"})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := s.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLog(ctx, nc, LogConfig{RecordFile: record})
		if err != nil {
			t.Fatal(err)
		}
		return l, func() { _ = l.Close(); nc.Close(); s.Shutdown() }
	}
	l, stop := open()
	for i := range 20 {
		if err := l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := os.Remove(filepath.Join(dir, "nats/jetstream/$G/streams", StreamName, "msgs/1.blk")); err != nil {
		t.Fatal(err)
	}
	l, stop = open()
	if l.Damage() == nil {
		t.Fatal("damage not found")
	}
	if _, err := l.AcknowledgeDamage(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	l, stop = open()
	defer stop()
	if d := l.Damage(); d != nil {
		t.Fatalf("damage reported again after the operator acknowledged it: %v", d)
	}
}

// TestReadOfEmptyAndStalledLogAnswers: an empty log answers at once; a read that
// waits for events the stream never delivers stops after ReadIdle with an error
// that says so.
func TestReadOfEmptyLogAnswers(t *testing.T) {
	l, _ := startLog(t, t.TempDir())
	n, err, took := readAll(t, l)
	if n != 0 || err != nil || took > time.Second {
		t.Errorf("empty log: %d events, %v, in %s", n, err, took)
	}
}

// TestHandlerAnswersPromptlyWhateverTheLogHolds: the NDJSON endpoint ends a read of
// a damaged log (its tail cut off: the stream still claims the lost sequences) and
// of an empty one at once, says what was lost in a header, and the repair endpoint
// wants the loss acknowledged in so many words.
func TestHandlerAnswersPromptlyWhateverTheLogHolds(t *testing.T) {
	damaged, _ := damagedLog(t, 30, func(blk string) {
		fi, err := os.Stat(blk)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(blk, fi.Size()/3); err != nil {
			t.Fatal(err)
		}
	})
	empty, _ := startLog(t, t.TempDir())
	for _, tc := range []struct {
		name   string
		l      *Log
		header bool
	}{{"damaged", damaged, true}, {"empty", empty, false}} {
		srv := httptest.NewServer(Handler(tc.l))
		start := time.Now()
		resp, err := http.Get(srv.URL + "?last=100")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		err = ReadStream(context.Background(), resp.Body, func(*Event) error { n++; return nil })
		resp.Body.Close()
		took := time.Since(start)
		srv.Close()
		t.Logf("%s: %d events in %s", tc.name, n, took)
		if err != nil || took > 2*time.Second {
			t.Errorf("%s: %d events, err %v, in %s; want all that remain, no error, under 2 s", tc.name, n, err, took)
		}
		if got := resp.Header.Get(DamageHeader); (got != "") != tc.header || (tc.header && !strings.Contains(got, "events lost")) {
			t.Errorf("%s: %s header %q", tc.name, DamageHeader, got)
		}
	}

	srv := httptest.NewServer(RepairHandler(damaged))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "ack-loss=true") || damaged.Damage() == nil {
		t.Errorf("repair without ack-loss: %d %s; want 400 naming ack-loss=true, and the damage kept", resp.StatusCode, body)
	}
	resp, err = http.Post(srv.URL+"?ack-loss=true", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"lost"`) || damaged.Damage() != nil {
		t.Errorf("repair with ack-loss: %d %s; want 200 with what was acknowledged, and no damage left", resp.StatusCode, body)
	}
}
