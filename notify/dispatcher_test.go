package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/events"
)

// staticSource is a fixed list of definitions (the node's bucket in production).
type staticSource struct {
	mu    sync.Mutex
	hooks []*Webhook
}

func (s *staticSource) List(context.Context) ([]*Webhook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Webhook, len(s.hooks))
	for i, h := range s.hooks {
		c := *h
		out[i] = &c
	}
	return out, nil
}

// receiver records what a webhook receiver got, verifying each signature.
type receiver struct {
	t      *testing.T
	secret string
	fail   atomic.Bool
	mu     sync.Mutex
	got    []CloudEvent
	bad    []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.fail.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := Verify(r.secret, req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, err.Error())
	}
	var ce CloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		r.bad = append(r.bad, err.Error())
	}
	r.got = append(r.got, ce)
}

func (r *receiver) events() []CloudEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]CloudEvent(nil), r.got...)
}

func waitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestDispatcherDeliversRetriesAndExpires(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := events.StartServer(events.ServerConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0", Name: "hooktest"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("hooktest")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log, err := events.OpenLog(ctx, nc, events.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	secret := "receiver-secret-0123456789"
	rcv := &receiver{t: t, secret: secret}
	hs := httptest.NewServer(rcv)
	defer hs.Close()
	src := &staticSource{hooks: []*Webhook{
		{Name: "pushes", URL: hs.URL, Patterns: []string{"app:*:push"}, Secret: secret, TTL: "P1D", Enabled: true},
		{Name: "elsewhere", URL: hs.URL, Patterns: []string{"*:*"}, Node: "ship43", Secret: secret, TTL: "P1D", Enabled: true},
	}}
	var offset atomic.Int64 // the dispatcher's clock runs ahead by this much
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Node, cfg.Conn, cfg.Log, cfg.Webhooks, cfg.Registerer = "ship42", nc, log, src, reg
	cfg.Refresh, cfg.MinBackoff, cfg.MaxBackoff, cfg.Poll = 100*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("dispatcher stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("dispatcher not ready after 10 s")
	}
	waitFor(t, 5*time.Second, func() error {
		if st := d.Status(ctx); len(st) != 1 || st[0].Name != "pushes" {
			return errString("status does not list exactly the webhook of this node's scope")
		}
		return nil
	})
	publish := func(a events.Action, repo, tag string) *events.Event {
		e := &events.Event{Action: a, Repository: repo, Tag: tag, Digest: "sha256:" + strings.Repeat("0", 64), Origin: "ship42"}
		if err := log.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	want := publish(events.ActionPush, "app", "v1")
	publish(events.ActionPush, "other", "v1")    // another repository
	publish(events.ActionTagDelete, "app", "v1") // a delete
	waitFor(t, 10*time.Second, func() error {
		if got := rcv.events(); len(got) != 1 {
			return errString(fmt.Sprintf("receiver has %d, not exactly the one matching push", len(got)))
		}
		return nil
	})
	got := rcv.events()[0]
	if got.ID != want.ID || got.Source != "/outpost/ship42" || got.Type != "io.outpost.image.push" || got.Data.Tag != "v1" {
		t.Errorf("notification %+v does not describe event %s", got, want.ID)
	}

	// The receiver fails: the event waits, the failure shows, then it is delivered.
	rcv.fail.Store(true)
	second := publish(events.ActionPush, "app", "v2")
	waitFor(t, 10*time.Second, func() error {
		st := d.Status(ctx)[0]
		if st.Failed < 2 || !strings.Contains(st.LastError, "503") || st.PendingMessages != 1 || !st.Failing {
			return errString("status does not yet show the failures and the backlog: " + st.LastError)
		}
		return nil
	})
	if n := testutil.ToFloat64(d.metrics.pendingG.WithLabelValues("pushes")); n != 1 {
		t.Errorf("outpost_webhook_pending_messages = %v, want 1", n)
	}
	rcv.fail.Store(false)
	waitFor(t, 10*time.Second, func() error {
		if got := rcv.events(); len(got) != 2 || got[1].ID != second.ID {
			return errString("the event that waited was not delivered once the receiver came back")
		}
		if st := d.Status(ctx)[0]; st.Failing || st.PendingMessages != 0 {
			return errString("status still failing or with a backlog after the delivery")
		}
		return nil
	})

	// An event older than the TTL when the worker reaches it is dropped and counted.
	rcv.fail.Store(true)
	publish(events.ActionPush, "app", "v3")
	waitFor(t, 10*time.Second, func() error {
		if d.Status(ctx)[0].Failed < 4 {
			return errString("no failed attempt yet")
		}
		return nil
	})
	offset.Store(int64(25 * time.Hour))
	rcv.fail.Store(false)
	waitFor(t, 10*time.Second, func() error {
		if st := d.Status(ctx)[0]; st.Expired != 1 || st.PendingMessages != 0 {
			return errString("the old event is not dropped as expired")
		}
		return nil
	})
	if n := len(rcv.events()); n != 2 {
		t.Errorf("receiver got %d notifications, want 2 (the expired one not delivered)", n)
	}
	if n := testutil.ToFloat64(d.metrics.deliveries.WithLabelValues("pushes", "expired")); n != 1 {
		t.Errorf("deliveries_total{result=expired} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(d.metrics.deliveries.WithLabelValues("pushes", "success")); n != 2 {
		t.Errorf("deliveries_total{result=success} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(d.metrics.deliveries.WithLabelValues("pushes", "failure")); n < 4 {
		t.Errorf("deliveries_total{result=failure} = %v, want at least 4", n)
	}
	if ts := testutil.ToFloat64(d.metrics.lastSuccess.WithLabelValues("pushes")); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_success_timestamp_seconds = %v, want within the last minute", ts)
	}
	rcv.mu.Lock()
	if len(rcv.bad) > 0 {
		t.Errorf("receiver refused: %v", rcv.bad)
	}
	rcv.mu.Unlock()

	// A deleted webhook's outbox goes.
	src.mu.Lock()
	src.hooks = src.hooks[1:]
	src.mu.Unlock()
	waitFor(t, 10*time.Second, func() error {
		names, err := events.ListWebhookOutboxes(ctx, nc)
		if err != nil || len(names) != 0 {
			return errString("outbox of the deleted webhook still there")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
