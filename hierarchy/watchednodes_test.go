package hierarchy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/events"
)

// The gateway answers each child's config and status every sync interval. What one
// answer costs must not grow with the number of nodes: it reads the definitions
// from a watched copy, not the bucket (which cost a read of every definition per
// request, the first thing a root of 1,000 children spent its CPU on).
func TestGatewayRequestCostDoesNotGrowWithTheTree(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	nc, err := events.DialParent(f.srv.Addr().String(), SyncTokenName("sitea"), f.pw["sitea"], "sitea", fixtureInstance("sitea"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	up := NewUplink(nc, "sitea", fixtureInstance("sitea"))
	// perRequest is how many messages the root's own connection (the gateway's
	// reads and its answer) sends per config request and status report.
	perRequest := func() float64 {
		const rounds = 20
		before := f.nc.Stats().OutMsgs
		for range rounds {
			if _, _, err := up.Config(ctx); err != nil {
				t.Fatal(err)
			}
			if err := up.Report(ctx, []Status{{Node: "sitea", State: Online, Reported: time.Now()}}); err != nil {
				t.Fatal(err)
			}
		}
		return float64(f.nc.Stats().OutMsgs-before) / rounds
	}
	small := perRequest()
	for i := range 300 {
		n := &Node{Name: fmt.Sprintf("other%03d", i), Parent: "root", Settings: settings(ReadOnly, "team/*"), Updated: time.Now()}
		if err := f.m.store.Put(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	large := perRequest()
	t.Logf("messages sent by the root per config + status: %.1f with 2 children, %.1f with 302", small, large)
	if large > small+2 {
		t.Fatalf("a config request and a status report cost %.1f messages at a root of 302 children, %.1f at 2: the gateway reads in proportion to the tree", large, small)
	}
}

// The watched copy is read-your-writes: a definition written a moment ago, or
// removed, is what the next Tree shows; a definition that does not decode is an
// error naming it until it is replaced.
func TestWatchedNodesSeeEveryWriteAtOnce(t *testing.T) {
	f := startRoot(t)
	ctx := context.Background()
	v, err := WatchNodes(ctx, f.m.store, "root")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		name := fmt.Sprintf("site%02d", i)
		if err := f.m.store.Put(ctx, &Node{Name: name, Parent: "root", Settings: settings(ReadOnly, "team/*")}); err != nil {
			t.Fatal(err)
		}
		tr, err := v.Tree(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tr.Get(name); !ok || len(tr.Children("root")) != i+1 {
			t.Fatalf("after writing %s the view has it: %v, %d children, want %d", name, ok, len(tr.Children("root")), i+1)
		}
	}
	if err := f.m.store.Delete(ctx, "site03"); err != nil {
		t.Fatal(err)
	}
	tr, err := v.Tree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Get("site03"); ok {
		t.Fatal("a deleted definition is still in the view")
	}
	if err := f.m.store.bucket.Put(ctx, "broken", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Tree(ctx); err == nil || !strings.Contains(err.Error(), "node broken: stored definition") {
		t.Fatalf("a definition that does not decode: err %v, want one naming node broken", err)
	}
	if err := f.m.store.Delete(ctx, "broken"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Tree(ctx); err != nil {
		t.Fatalf("after the broken definition was removed: %v", err)
	}
}

// A node syncs its whole subtree and its bound tokens every interval: what did not
// change is not written again (a write per node below it every 2 s, each waking
// every watcher of the bucket); what changed is.
func TestSyncWritesOnlyWhatChanged(t *testing.T) {
	f := startGateway(t)
	ctx := context.Background()
	if _, _, err := f.m.CreateToken(ctx, "ci", ScopeMap{{Repository: "team/*", Actions: []string{"pull"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Update(ctx, "sitea", UpdateRequest{AddClientTokens: []string{"ci"}}.Apply); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Create(ctx, "below", "sitea", settings(ReadOnly, "team/*")); err != nil {
		t.Fatal(err)
	}
	nc, err := events.DialParent(f.srv.Addr().String(), SyncTokenName("sitea"), f.pw["sitea"], "sitea", fixtureInstance("sitea"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	local := map[string]*events.Bucket{}
	for _, name := range []string{"CHILD_NODES", "CHILD_TOKENS", "CHILD_STATUS"} {
		if local[name], err = events.OpenBucket(ctx, f.nc, name); err != nil {
			t.Fatal(err)
		}
	}
	s := NewSyncer(SyncerConfig{Self: "sitea", Uplink: NewUplink(nc, "sitea", fixtureInstance("sitea")),
		Nodes: NewStore(local["CHILD_NODES"]), Tokens: NewTokenStore(local["CHILD_TOKENS"]), Status: NewStatusStore(local["CHILD_STATUS"]),
		Apply: func(context.Context, *Node) {}, SelfStatus: func(context.Context) Status { return Status{Node: "sitea", State: Online} }})
	revisions := func() (nodes, tokens uint64) {
		t.Helper()
		var err1, err2 error
		nodes, err1 = local["CHILD_NODES"].Revision(ctx)
		tokens, err2 = local["CHILD_TOKENS"].Revision(ctx)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		return nodes, tokens
	}
	if err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	n1, t1 := revisions()
	if n1 != 2 || t1 != 1 {
		t.Fatalf("first sync wrote %d definitions and %d tokens, want 2 and 1", n1, t1)
	}
	for range 3 {
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n2, t2 := revisions(); n2 != n1 || t2 != t1 {
		t.Fatalf("three syncs of nothing new wrote %d definitions and %d tokens", n2-n1, t2-t1)
	}
	if _, err := f.m.Update(ctx, "below", func(s *Settings) error { s.LogLevel = "debug"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n3, t3 := revisions(); n3 != n1+1 || t3 != t1 {
		t.Fatalf("a sync after one definition changed wrote %d definitions and %d tokens, want 1 and 0", n3-n1, t3-t1)
	}
	got, _, err := NewStore(local["CHILD_NODES"]).Get(ctx, "below")
	if err != nil || got.Settings.LogLevel != "debug" {
		t.Fatalf("the changed definition: %+v %v", got, err)
	}
}
