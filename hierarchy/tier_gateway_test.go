package hierarchy

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
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

// TestAFenceReachesEveryMembersGateway: an activation taken at one root member
// fences the child's other processes at every member's gateway, since a stale
// process may be connected to any of them (before, only the member that took the
// activation closed the connections it held).
func TestAFenceReachesEveryMembersGateway(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	type closed struct {
		member, user       string
		keepsOld, keepsNew bool
	}
	got := make(chan closed, 8)
	var gws []*Gateway
	for _, member := range []string{"one", "two"} {
		nc, err := f.srv.Connect("member-" + member)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		g, err := StartGateway(GatewayConfig{Self: "root", Conn: nc, Nodes: f.m.store, Tokens: f.m.tokens, Status: f.m.status,
			Activator: f.m, Logger: slog.New(slog.NewTextHandler(f.logs, nil)),
			Disconnect: func(user string, keep func(string) bool) int {
				got <- closed{member, user, keep(fixtureInstance("sitea")), keep("anotherinstance1")}
				return 1
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Stop)
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		gws = append(gws, g)
	}
	// Member one's Manager takes a new process's activation (after a deactivation).
	f.m.onActivation = func(ctx context.Context, node string) { gws[0].FenceTier(ctx, node) }
	if _, err := f.m.Deactivate(ctx, "sitea"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the deactivation's fence: nothing active, every process goes
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("after a deactivation at member one, %d of 2 members fenced sitea", i)
		}
	}
	if _, err := f.m.Activate(ctx, "sitea", "anotherinstance1", Endpoints{}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	timeout := time.After(5 * time.Second)
	for len(seen) < 2 {
		select {
		case c := <-got:
			seen[c.member] = c.user
			if c.keepsOld || !c.keepsNew {
				t.Errorf("member %s: the fence keeps the old process (%v) or closes the new one (%v)", c.member, c.keepsOld, !c.keepsNew)
			}
		case <-timeout:
			t.Fatalf("after an activation at member one, fenced at %v: want both members", seen)
		}
	}
	if seen["one"] != "sitea-sync" || seen["two"] != "sitea-sync" {
		t.Errorf("fenced users: %v, want sitea-sync at both", seen)
	}
}
