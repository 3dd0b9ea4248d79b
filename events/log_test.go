package events

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func startLog(t *testing.T, dir string) (*Log, *Server) {
	t.Helper()
	s, err := StartServer(ServerConfig{Dir: dir, Addr: "127.0.0.1:0", Name: "logtest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := OpenLog(context.Background(), nc, LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return l, s
}

func TestLogPublishReadAndDedupe(t *testing.T) {
	dir := t.TempDir()
	l, s := startLog(t, dir)
	ctx := context.Background()
	for i := range 5 {
		e := &Event{Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}
		if err := l.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.Sequence != uint64(i+1) {
			t.Fatalf("event %d got sequence %d", i, e.Sequence)
		}
	}
	// A retried publish of the same event id is stored once.
	dup := &Event{ID: "fixed", Action: ActionTagDelete, Repository: "app", Tag: "0"}
	for range 2 {
		if err := l.Publish(ctx, dup); err != nil {
			t.Fatal(err)
		}
	}
	var tags []string
	if err := l.Read(ctx, ReadOptions{Last: 3}, func(e *Event) error {
		tags = append(tags, e.Tag)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tags) != "[3 4 0]" {
		t.Errorf("last 3 = %v, want [3 4 0]", tags)
	}
	// Nothing is lost across a restart of the server on the same store.
	s.Shutdown()
	l2, _ := startLog(t, dir)
	st, err := l2.Stats(ctx)
	if err != nil || st.Messages != 6 {
		t.Fatalf("after restart: %+v, %v; want 6 messages", st, err)
	}
}

func TestLogFollowDeliversNewEvents(t *testing.T) {
	l, _ := startLog(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan *Event, 1)
	go func() {
		_ = l.Read(ctx, ReadOptions{Follow: true}, func(e *Event) error {
			got <- e
			return nil
		})
	}()
	if err := l.Publish(ctx, &Event{Action: ActionPush, Repository: "app", Digest: "sha256:00"}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.Repository != "app" {
			t.Errorf("followed %v", e)
		}
	case <-ctx.Done():
		t.Fatal("follow delivered nothing")
	}
}
