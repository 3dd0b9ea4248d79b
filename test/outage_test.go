package test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
)

// purgeOutbox empties an outbox in a stopped node's store, as message TTLs would
// after a long enough outage (the product's P1D..P90D TTL bounds stay as they are).
// It returns how many messages it removed.
func purgeOutbox(t *testing.T, n *Node, outbox string) uint64 {
	t.Helper()
	ctx := context.Background()
	// Let go of the store before the node restarts on it.
	srv, nc := eventstest.StartServer(t, events.ServerConfig{Dir: filepath.Join(n.Data(), "nats"), Name: n.opts.Name})
	defer srv.Shutdown()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, outbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs := st.CachedInfo().State.Msgs
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// TestOutageLongerThanTheTTLReconciles: a site away while its outbox lost messages
// notices the gap when it comes back, reconciles its whole scope, converges, and
// says so in its status.
func TestOutageLongerThanTheTTLReconciles(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "siteaway", Mode: "ReadOnly", Repositories: []string{"away/*"}})
	d0 := push(t, root, "away/base:1", content.Image(t, 1))
	eventuallyAt(t, "away/base:1", d0, site)

	site.Stop()
	d1 := push(t, root, "away/app:1", content.Image(t, 1))
	d2 := push(t, root, "away/app:2", content.Image(t, 2))
	if err := remote.Delete(mustRef(t, root, "away/base:1"), Auth); err != nil {
		t.Fatal(err)
	}
	root.Stop()
	// The root may stop before routing the last event; that one is routed when it
	// returns. The two pushes were routed long before.
	lost := purgeOutbox(t, root, events.DownstreamOutbox("siteaway"))
	if lost < 2 {
		t.Fatalf("purged %d messages from the outbox, want at least the 2 pushes of the outage", lost)
	}
	root.Start()
	site.Start()

	eventuallyAt(t, "away/app:1", d1, site)
	eventuallyAt(t, "away/app:2", d2, site)
	eventuallyAt(t, "away/base:1", "", site)
	Eventually(t, replicationTimeout, func() error {
		var v struct {
			Status *struct {
				Details []struct{ Code, Message string }
			}
		}
		if err := json.Unmarshal([]byte(root.MustCLI(t, "node", "show", "siteaway")), &v); err != nil {
			return err
		}
		if v.Status != nil {
			for _, d := range v.Status.Details {
				if d.Code == "MESSAGES_EXPIRED" && strings.Contains(d.Message, fmt.Sprintf("%d downstream messages expired", lost)) {
					return nil
				}
			}
		}
		return fmt.Errorf("siteaway's status does not tell of the expired messages: %+v", v.Status)
	})
}
