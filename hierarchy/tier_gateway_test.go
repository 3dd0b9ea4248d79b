package hierarchy

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
)

// countingActivator counts the activations a gateway asks for.
type countingActivator struct {
	Activator
	calls *atomic.Int64
}

func (c countingActivator) Activate(ctx context.Context, node, instance string, ep Endpoints) (*Node, error) {
	c.calls.Add(1)
	return c.Activator.Activate(ctx, node, instance, ep)
}

// TestTwoGatewaysAnswerEachControlRequestOnce: two root members' gateways on one
// NATS (each its own connection, as two members of a cluster) serve a child's
// control requests: each is handled by exactly one of them.
func TestTwoGatewaysAnswerEachControlRequestOnce(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	f.g.Stop() // the fixture's gateway keeps checking logins; two members answer
	var calls [2]atomic.Int64
	for i := range calls {
		nc, err := f.srv.Connect("member")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		g, err := StartGateway(GatewayConfig{Self: "root", Conn: nc, Nodes: f.m.store, Tokens: f.m.tokens, Status: f.m.status,
			Activator: countingActivator{f.m, &calls[i]}, Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Stop)
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	a := NewUplink(f.dial(t, "sitea").NC, "sitea", fixtureInstance("sitea"))
	const requests = 20
	for i := range requests {
		if _, err := a.Activate(ctx, "sitea", fixtureInstance("sitea"), Endpoints{}); err != nil {
			t.Fatalf("activation %d: %v", i, err)
		}
	}
	// A member counts a request before it answers: each answered one is counted,
	// and a second member's copy of the first 19 would be counted by now.
	total := calls[0].Load() + calls[1].Load()
	if total != requests {
		t.Fatalf("%d activation requests were handled %d times (member 1: %d, member 2: %d): want each once",
			requests, total, calls[0].Load(), calls[1].Load())
	}
}
