package events

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// A site dials every member's gateway; when the member it is connected to stops,
// it reconnects to another and drains its outbox on from where it stood: every
// message once, in order.
func TestClusterSiteFailsOver(t *testing.T) {
	servers := startCluster(t, 3)
	var gateways []string
	for _, s := range servers {
		s.SetChildAuthenticator(oneChild{"child1", "child1-password"})
		gateways = append(gateways, s.Addr().String())
	}
	ctx := context.Background()
	nc, err := servers[0].Connect("node")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ob, err := OpenOutbox(ctx, nc, DownstreamOutbox("child1"), DefaultMessageTTL, WithPlacement(servers[0].Placement()))
	if err != nil {
		t.Fatal(err)
	}
	const total = 60
	for i := range total {
		e := &Event{ID: fmt.Sprintf("ev%03d", i), Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}
		if err := ob.Append(ctx, e, e.ID+".child1"); err != nil {
			t.Fatal(err)
		}
	}
	site, err := DialParent(strings.Join(gateways, ","), "child1-sync", "child1-password", "child1", "instance0001")
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	checkFor(t, 10*time.Second, func() error {
		if !site.IsConnected() {
			return fmt.Errorf("site not connected to any of %v", gateways)
		}
		return nil
	})
	q, err := OpenQueue(ctx, site, DownstreamOutbox("child1"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	drain := func(upTo int, within time.Duration) {
		t.Helper()
		checkFor(t, within, func() error {
			for len(got) < upTo {
				d, err := q.Next(ctx, 500*time.Millisecond)
				if err != nil {
					return fmt.Errorf("after %d messages: %w", len(got), err)
				}
				if d == nil {
					return fmt.Errorf("after %d messages: none came", len(got))
				}
				if err := d.Ack(ctx); err != nil {
					return fmt.Errorf("ack %s: %w", d.Event.ID, err)
				}
				got = append(got, d.Event.ID)
			}
			return nil
		})
	}
	drain(total/2, 10*time.Second)
	first := site.ConnectedUrl()
	for _, s := range servers {
		if s.Addr().String() == strings.TrimPrefix(first, "nats://") {
			s.Shutdown()
		}
	}
	stopped := time.Now()
	drain(total, 15*time.Second)
	t.Logf("site was at %s; after it stopped the site drained on through %s within %s",
		first, site.ConnectedUrl(), time.Since(stopped).Round(time.Millisecond))
	if site.ConnectedUrl() == first {
		t.Errorf("site still on %s", first)
	}
	for i, id := range got {
		if want := fmt.Sprintf("ev%03d", i); id != want {
			t.Fatalf("message %d is %s, want %s (every message once, in order): %v", i, id, want, got)
		}
	}
}

// Two members' routers on the one router durable of the replicated log take the
// events in turn: each once, in the log's order across both (one in flight at a
// time), as two root processes would.
func TestClusterTwoRoutersOneDurable(t *testing.T) {
	servers := startCluster(t, 3)
	ctx := context.Background()
	logs := []*Log{openMemberLog(t, servers[0]), openMemberLog(t, servers[1])}
	const total = 200
	for i := range total {
		if err := logs[i%2].Publish(ctx, &Event{ID: fmt.Sprintf("ev%03d", i), Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	type taken struct {
		router int
		seq    uint64
	}
	out := make(chan taken, total)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make(chan error, 2)
	for r, l := range logs {
		go func() {
			q, err := l.Consume(runCtx)
			if err != nil {
				errs <- err
				return
			}
			for runCtx.Err() == nil {
				d, err := q.Next(runCtx, 200*time.Millisecond)
				if err != nil || d == nil {
					continue
				}
				out <- taken{r, d.Sequence}
				if err := d.Ack(runCtx); err != nil && runCtx.Err() == nil {
					errs <- fmt.Errorf("router %d ack %d: %w", r, d.Sequence, err)
					return
				}
			}
		}()
	}
	var got []taken
	deadline := time.After(20 * time.Second)
	for len(got) < total {
		select {
		case tk := <-out:
			got = append(got, tk)
		case err := <-errs:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("%d of %d events routed", len(got), total)
		}
	}
	stop()
	per := [2]int{}
	for i, tk := range got {
		per[tk.router]++
		if tk.seq != uint64(i+1) {
			t.Fatalf("delivery %d is sequence %d: want each event once, in order", i, tk.seq)
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Logf("one router took every event (%v): order holds, sharing is up to the server", per)
	}
	t.Logf("%d events routed in order by two routers: %v each", total, per)
}

// TestClusterRouterEventHeldByADeadMemberComesBack: a member's router that took an
// event and died (never acks) holds the tier's routing for RouterAckWait only: the
// other member's router gets that event next, then the rest in order. Before, the
// router durable used AckWait (30 s), and after a SIGKILL no site saw a change for
// up to 30 s.
func TestClusterRouterEventHeldByADeadMemberComesBack(t *testing.T) {
	servers := startCluster(t, 3)
	ctx := context.Background()
	logs := []*Log{openMemberLog(t, servers[0]), openMemberLog(t, servers[1])}
	for i := range 3 {
		if err := logs[0].Publish(ctx, &Event{ID: fmt.Sprintf("ev%03d", i), Action: ActionPush, Repository: "app", Tag: fmt.Sprint(i), Digest: "sha256:00"}); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := logs[0].Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held, err := dead.Next(ctx, 5*time.Second)
	if err != nil || held == nil || held.Sequence != 1 {
		t.Fatalf("the first router's event: %+v, %v", held, err)
	}
	taken := time.Now()
	live, err := logs[1].Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for len(got) < 3 && time.Since(taken) < RouterAckWait+10*time.Second {
		d, err := live.Next(ctx, time.Second)
		if err != nil || d == nil {
			continue
		}
		if len(got) == 0 {
			t.Logf("the held event came back to the other router %s after it was taken", time.Since(taken).Round(time.Millisecond))
			if since := time.Since(taken); since > RouterAckWait+2*time.Second {
				t.Errorf("the held event came back after %s: want about RouterAckWait (%s)", since, RouterAckWait)
			}
		}
		got = append(got, d.Sequence)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("the other router got %v: want 1 (the held event), 2, 3", got)
	}
}
