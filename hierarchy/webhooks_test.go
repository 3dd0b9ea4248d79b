package hierarchy

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/notify"
)

// TestWebhooksGoOnlyWhereTheirScopeIs: a subtree is sent the tree-wide webhooks and
// those of its own nodes, never another node's (whose secret it must not learn); a
// copy from the parent replaces the local one, without the definitions that break
// a rule.
func TestWebhooksGoOnlyWhereTheirScopeIs(t *testing.T) {
	f := startRoot(t)
	ctx := context.Background()
	for _, n := range []struct{ name, parent string }{{"ship42", ""}, {"ship43", ""}, {"deck1", "ship42"}} {
		if _, err := f.m.Create(ctx, n.name, n.parent, settings(ReadOnly, "*")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := events.OpenBucket(ctx, f.nc, events.BucketWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	store := NewWebhookStore(b)
	hook := func(name, node string) *notify.Webhook {
		return &notify.Webhook{Name: name, URL: "http://127.0.0.1:9/", Patterns: []string{"*:*"}, Node: node,
			Secret: strings.Repeat("s", 20), TTL: "P2D", Enabled: true}
	}
	for _, h := range []*notify.Webhook{hook("everyone", ""), hook("forship42", "ship42"), hook("fordeck1", "deck1"), hook("forship43", "ship43")} {
		if err := store.Create(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := f.m.Tree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := func(hs []*notify.Webhook) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		node string
		want []string
	}{
		{"ship42", []string{"everyone", "fordeck1", "forship42"}},
		{"deck1", []string{"everyone", "fordeck1"}},
		{"ship43", []string{"everyone", "forship43"}},
	} {
		n, _ := tree.Get(c.node)
		got, err := webhooksFor(ctx, store, append([]*Node{n}, tree.Subtree(c.node)...))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names(got), c.want) {
			t.Errorf("%s's subtree is sent %v, want %v", c.node, names(got), c.want)
		}
	}

	// Replace: the parent's copy wins; a definition that breaks a rule is left out.
	bad := hook("badhook", "")
	bad.URL = "ftp://x/"
	if err := store.Replace(ctx, []*notify.Webhook{hook("everyone", ""), bad}); err != nil {
		t.Fatal(err)
	}
	all, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(all); !slices.Equal(got, []string{"everyone"}) {
		t.Errorf("after Replace the copy holds %v, want [everyone]", got)
	}
	// The same copy again is not written again (a sync every 2 s); a change is.
	_, rev, err := store.Get(ctx, "everyone")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Replace(ctx, []*notify.Webhook{hook("everyone", "")}); err != nil {
		t.Fatal(err)
	}
	if _, again, _ := store.Get(ctx, "everyone"); again != rev {
		t.Errorf("an unchanged webhook was written again: revision %d -> %d", rev, again)
	}
	changed := hook("everyone", "")
	changed.URL = "http://127.0.0.1:10/"
	if err := store.Replace(ctx, []*notify.Webhook{changed}); err != nil {
		t.Fatal(err)
	}
	if w, again, _ := store.Get(ctx, "everyone"); again == rev || w.URL != changed.URL {
		t.Errorf("a changed webhook was not written: revision %d -> %d, url %s", rev, again, w.URL)
	}
}
