package hierarchy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestScopeRulesParseAndAddUp(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"team/app", "want REPOSITORY=ACTIONS"},
		{"team/app=", `action ""`},
		{"team/app=pull,write", `action "write"`},
		{"Team/app=pull", "lowercase"},
		{"team/*/x=pull", "one trailing *"},
	} {
		if _, err := ParseScopeRule(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseScopeRule(%q) = %v, want an error saying %q", c.in, err, c.want)
		}
	}
	var m ScopeMap
	for _, s := range []string{"team/*=pull", "team/app=push", "*=pull"} {
		r, err := ParseScopeRule(s)
		if err != nil {
			t.Fatal(err)
		}
		m = m.Put(r)
	}
	if got := m.Actions("team/app"); !slices.Equal(got, []string{"pull", "push"}) {
		t.Errorf("team/app: %v, want pull and push", got)
	}
	if got := m.Actions("other/app"); !slices.Equal(got, []string{"pull"}) {
		t.Errorf("other/app: %v, want pull", got)
	}
	m = m.Put(ScopeRule{Repository: "team/app", Actions: []string{"delete"}})
	if got := (ScopeMap{m[1]}).Actions("team/app"); !slices.Equal(got, []string{"delete"}) {
		t.Errorf("Put replaces a pattern's rule: %v", got)
	}
}

// TestAccessFollowsTokensBindingsAndChildren: what a node's Access grants, over real
// KV, as the root and as a connected node see it.
func TestAccessFollowsTokensBindingsAndChildren(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "lineone", "factory", settings(ReadOnly, "plant/line1/*")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(ctx, "factory", UpdateRequest{AddClientTokens: []string{"ci"}}.Apply); err == nil {
		t.Fatal("binding an unknown token was accepted")
	}
	ci, pw, err := m.CreateToken(ctx, "ci", ScopeMap{{Repository: "plant/*", Actions: []string{"pull", "push"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.CreateToken(ctx, "factory-sync", ScopeMap{{Repository: "*", Actions: []string{"pull"}}}); err == nil {
		t.Error("a token named like a sync token was accepted")
	}
	if _, err := m.Activate(ctx, "factory", "one", Endpoints{Registry: "127.0.0.1:5001", Gateway: "127.0.0.1:4223"}); err != nil {
		t.Fatal(err)
	}
	cs, err := m.Settings(ctx, "lineone", 0)
	if err != nil {
		t.Fatal(err)
	}
	admin := func(pw string) bool { return pw == "admin-secret" }
	root := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: m.store, Tokens: m.tokens, IsAdmin: admin})
	factory := NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})

	if g, err := root.Login("ci", pw); err != nil || !slices.Equal(g.Scope.Actions("plant/a"), []string{"pull", "push"}) {
		t.Errorf("ci at the root: %+v, %v", g, err)
	}
	if _, err := root.Login("ci", pw+"x"); !errors.Is(err, ErrLogin) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := factory.Login("ci", pw); err == nil || !strings.Contains(err.Error(), "not bound") {
		t.Errorf("unbound token at factory: %v", err)
	}
	if _, err := m.Update(ctx, "factory", UpdateRequest{AddClientTokens: []string{"ci"}}.Apply); err != nil {
		t.Fatal(err)
	}
	factory = NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens}) // no snapshot wait
	if _, err := factory.Login("ci", pw); err != nil {
		t.Errorf("bound token at factory: %v", err)
	}
	// Rotation: a second password works beside the first.
	pw2, err := m.TokenPassword(ctx, "ci", 2)
	if err != nil {
		t.Fatal(err)
	}
	factory = NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})
	for i, p := range []string{pw, pw2} {
		if _, err := factory.Login("ci", p); err != nil {
			t.Errorf("password %d after rotation: %v", i+1, err)
		}
	}
	if _, err := m.TokenPassword(ctx, "ci", 3); err == nil {
		t.Error("password 3 was accepted")
	}
	// The child's sync token: its own scope, pull only for a ReadOnly child.
	g, err := factory.Login("lineone-sync", cs.SyncTokenPassword)
	if err != nil || g.Child != "lineone" || !slices.Equal(g.Scope.Actions("plant/line1/x"), []string{"pull"}) || g.Scope.Actions("plant/other") != nil {
		t.Errorf("lineone's sync token at factory: %+v, %v", g, err)
	}
	if _, err := root.Login("lineone-sync", cs.SyncTokenPassword); !errors.Is(err, ErrLogin) {
		t.Errorf("a grandchild's sync token at the root: %v", err)
	}
	if _, err := factory.Login("admin", "admin-secret"); !errors.Is(err, ErrLogin) {
		t.Errorf("the admin token away from the root: %v", err)
	}
	if g, err := root.Login("admin", "admin-secret"); err != nil || !g.Admin {
		t.Errorf("the admin at the root: %+v, %v", g, err)
	}
	// Unbound: refused at factory again.
	if _, err := m.Update(ctx, "factory", UpdateRequest{RemoveClientTokens: []string{"ci"}}.Apply); err != nil {
		t.Fatal(err)
	}
	factory = NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})
	if _, err := factory.Login("ci", pw2); err == nil || !strings.Contains(err.Error(), "not bound") {
		t.Errorf("unbound again: %v", err)
	}
	if _, err := m.Update(ctx, "factory", UpdateRequest{AddClientTokens: []string{"ci"}}.Apply); err != nil {
		t.Fatal(err)
	}
	// Disabled, then deleted: Lookup (what a registry token is re-checked with) fails too.
	if _, err := m.UpdateToken(ctx, "ci", TokenUpdateRequest{Enabled: new(bool)}.Apply); err != nil {
		t.Fatal(err)
	}
	factory = NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})
	if _, err := factory.Lookup("ci"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("disabled token: %v", err)
	}
	if err := m.DeleteToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := m.TokenNodes(ctx, "ci"); len(nodes) != 0 {
		t.Errorf("a deleted token is still bound to %v", nodes)
	}
	root = NewAccess(AccessConfig{Self: "root", Root: true, Nodes: m.store, Tokens: m.tokens, IsAdmin: admin})
	if _, err := root.Lookup(ci.Name); !errors.Is(err, ErrLogin) {
		t.Errorf("deleted token: %v", err)
	}
}
