package node

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hierarchy"
)

// The router asks for the node's neighbours for every event it routes. What that
// costs must not grow with the tree: the children come from the watched copy of
// the definitions, not from a read of every definition per event.
func TestNeighboursCostTheSameAtAnySizeOfTree(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.HTTPAddr, cfg.GatewayAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.OperatorToken = "neighbours-test-admin-token-0123"
	cfg.Scrub.Interval = 0
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-ran
	})
	select {
	case <-n.Serving():
	case err := <-ran:
		t.Fatalf("root stopped: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("root not serving after a minute")
	}
	ctx := context.Background()
	// perEvent is how many messages the node's connection sends per Neighbours call
	// (the router's pulls and the status loop add a few over all calls, not per call).
	perEvent := func(want int) float64 {
		t.Helper()
		const calls = 50
		before := n.nc.Stats().OutMsgs
		for range calls {
			ns, err := n.Neighbours(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) != want {
				t.Fatalf("%d neighbours, want %d", len(ns), want)
			}
		}
		return float64(n.nc.Stats().OutMsgs-before) / calls
	}
	put := func(from, to int) {
		for i := from; i < to; i++ {
			c := &hierarchy.Node{Name: fmt.Sprintf("site%03d", i), Parent: n.name,
				Settings: hierarchy.Settings{Mode: hierarchy.ReadOnly, Repositories: hierarchy.Scope{"team/*"}}}
			if err := n.nodes.Put(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 2)
	small := perEvent(2)
	put(2, 300)
	large := perEvent(300)
	t.Logf("messages per routed event's Neighbours: %.2f with 2 children, %.2f with 300", small, large)
	if large > small+1 {
		t.Fatalf("Neighbours costs %.2f messages with 300 children, %.2f with 2: it reads in proportion to the tree", large, small)
	}
}
