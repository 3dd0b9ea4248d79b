package events

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAppenderAppendsToEveryOutboxOnce: one event pipelined to more outboxes than
// the window holds lands once in each; appended again with the same keys (a route
// retried) it is not duplicated; an outbox that is gone fails the append, named.
func TestAppenderAppendsToEveryOutboxOnce(t *testing.T) {
	ctx := context.Background()
	s, err := StartServer(ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "apptest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect("apptest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	a, err := NewAppender(nc)
	if err != nil {
		t.Fatal(err)
	}
	const n = appendWindow + 44
	targets := make([]AppendTarget, n)
	for i := range targets {
		ob, err := OpenOutbox(ctx, nc, DownstreamOutbox(fmt.Sprintf("site%03d", i)), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		targets[i] = AppendTarget{Outbox: ob, Key: fmt.Sprintf("ev1.site%03d", i)}
	}
	e := &Event{ID: "ev1", Action: ActionPush, Repository: "team/app", Tag: "v1", Digest: "sha256:" + strings.Repeat("a", 64), Origin: "root"}
	for range 2 {
		if err := a.Append(ctx, e, targets); err != nil {
			t.Fatal(err)
		}
	}
	for _, tg := range targets {
		p, err := tg.Outbox.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Messages != 1 {
			t.Fatalf("outbox %s holds %d messages, want the event once", tg.Outbox.Name(), p.Messages)
		}
	}
	if err := DeleteOutbox(ctx, nc, targets[7].Outbox.Name()); err != nil {
		t.Fatal(err)
	}
	err = a.Append(ctx, &Event{ID: "ev2", Action: ActionPush, Repository: "team/app", Tag: "v2", Digest: e.Digest, Origin: "root"},
		[]AppendTarget{{Outbox: targets[6].Outbox, Key: "ev2.a"}, {Outbox: targets[7].Outbox, Key: "ev2.b"}})
	if err == nil || !strings.Contains(err.Error(), targets[7].Outbox.Name()) {
		t.Fatalf("append to a deleted outbox: %v, want an error naming %s", err, targets[7].Outbox.Name())
	}
}
