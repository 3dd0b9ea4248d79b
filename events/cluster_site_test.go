package events

import (
	"context"
	"fmt"
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
