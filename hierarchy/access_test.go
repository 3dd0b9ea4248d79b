package hierarchy

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
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

// TestSyncTokenGrantNamesItsSubtree: a child's sync token carries the nodes under
// the child, as this node knows them: the origins it may pass changes on for.
func TestSyncTokenGrantNamesItsSubtree(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	for _, n := range []struct{ name, parent string }{
		{"factory", ""}, {"lineone", "factory"}, {"linetwo", "factory"}, {"cellone", "lineone"}, {"island", ""},
	} {
		if _, err := m.Create(ctx, n.name, n.parent, settings(ReadWrite, "plant/*")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Activate(ctx, "factory", "one", Endpoints{Registry: "127.0.0.1:5001", Gateway: "127.0.0.1:4223"}); err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{}
	for _, child := range []string{"factory", "island", "lineone"} {
		cs, err := m.Settings(ctx, child, 0)
		if err != nil {
			t.Fatal(err)
		}
		passwords[child] = cs.SyncTokenPassword
	}
	root := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: m.store, Tokens: m.tokens})
	factory := NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})
	for _, c := range []struct {
		at    *Access
		child string
		below []string
	}{
		{root, "factory", []string{"lineone", "linetwo", "cellone"}},
		{root, "island", nil},
		{factory, "lineone", []string{"cellone"}},
	} {
		g, err := c.at.Login(SyncTokenName(c.child), passwords[c.child])
		if err != nil {
			t.Fatal(err)
		}
		if g.Child != c.child || !slices.Equal(g.Below, c.below) {
			t.Errorf("%s's sync token: child %q below %v, want %v", c.child, g.Child, g.Below, c.below)
		}
	}
}

// TestLoginTimeDoesNotTellNamesApart: a login with an unknown name takes as long as
// a wrong password for an existing one (client tokens with one or two passwords,
// and children's sync tokens, at the registry and at the gateway): medians of 20
// tries each (3 under the race detector), interleaved, within 0.5x-2x.
func TestLoginTimeDoesNotTellNamesApart(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Settings(ctx, "factory", 0); err != nil {
		t.Fatal(err)
	}
	scope := ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}}
	if _, _, err := m.CreateToken(ctx, "ci", scope); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.CreateToken(ctx, "rotated", scope); err != nil {
		t.Fatal(err)
	}
	if _, err := m.TokenPassword(ctx, "rotated", 2); err != nil {
		t.Fatal(err)
	}
	root := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: m.store, Tokens: m.tokens})
	// The gateway's check of a child's login, as a child's NATS connection meets it.
	gw := &Gateway{self: "root", nodes: m.store, logins: newLoginCache(loginCacheTTL), log: slog.New(slog.DiscardHandler)}
	users := []string{"nosuchuser", "ci", "rotated", "nosuchnode-sync", "factory-sync", "gateway:nosuchnode-sync", "gateway:factory-sync"}
	times := map[string][]time.Duration{}
	tries := 20
	if raceEnabled {
		tries = 3
	}
	for i := range tries {
		for _, u := range users {
			pw := "wrong-password-" + string(rune('a'+i))
			start := time.Now()
			if child, ok := strings.CutPrefix(u, "gateway:"); ok {
				if _, ok := gw.AuthenticateChild(child, pw, "instanceone"); ok {
					t.Fatalf("gateway: %s with a wrong password was let in", child)
				}
			} else if _, err := root.Login(u, pw); !errors.Is(err, ErrLogin) {
				t.Fatalf("%s with a wrong password: %v, want ErrLogin", u, err)
			}
			times[u] = append(times[u], time.Since(start))
		}
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	base := median(times["nosuchuser"])
	t.Logf("median login, wrong password or unknown name: %s %s", "nosuchuser", base)
	for _, u := range users[1:] {
		md := median(times[u])
		ratio := float64(md) / float64(base)
		t.Logf("median login, wrong password or unknown name: %s %s (%.2fx the unknown user)", u, md, ratio)
		if ratio < 0.5 || ratio > 2 {
			t.Errorf("%s: median %s against %s for an unknown user (%.2fx): the time tells the names apart", u, md, base, ratio)
		}
	}
}

// TestAccessKeepsItsLastReadWhileTheStoresAreAway: a store that does not answer (a
// root tier's buckets electing a leader after a member died) leaves logins checked
// against the last read, for up to staleLimit, each failed read costing a second at
// most, granting only (a password it does not hold is ErrUnavailable); past that,
// a login is ErrUnavailable (try again), never ErrLogin (a failed login). Before, every login failed with a 401 while the stores were away, after
// waiting 5 s.
func TestAccessKeepsItsLastReadWhileTheStoresAreAway(t *testing.T) {
	r := startRoot(t)
	ctx := context.Background()
	_, pw, err := r.m.CreateToken(ctx, "ci", ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	a := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: r.m.store, Tokens: r.m.tokens})
	if _, err := a.Login("ci", pw); err != nil {
		t.Fatalf("stores up: %v", err)
	}
	r.srv.Shutdown()
	time.Sleep(snapshotTTL + 100*time.Millisecond) // the read is due again
	for i := range 3 {
		start := time.Now()
		if _, err := a.Login("ci", pw); err != nil {
			t.Fatalf("stores away, login %d: %v", i, err)
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("stores away, login %d took %s: want at most the 1 s read", i, took)
		}
	}
	// The stand-in may predate a password made since: it never refuses
	// credentials, which would count as failed logins (the limiter then locked out
	// every client of the address, sites' copies included).
	for _, c := range []struct{ user, pw string }{{"ci", pw + "x"}, {"newtoken", "pw"}, {"factory-sync", "pw"}} {
		if _, err := a.Login(c.user, c.pw); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLogin) {
			t.Errorf("stores away, %s with a password the last read does not hold: %v, want ErrUnavailable", c.user, err)
		}
	}
	a.mu.Lock()
	a.read = time.Now().Add(-staleLimit) // the last read is too old to stand in
	a.loaded = a.read
	a.mu.Unlock()
	if _, err := a.Login("ci", pw); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLogin) {
		t.Errorf("stores away, last read too old: %v, want ErrUnavailable", err)
	}
}

// TestAccessKeepFreshReadsWithoutLogins: KeepFresh reads the stores on its own, so
// a member with no logins has a recent read to stand in when its stores go away.
func TestAccessKeepFreshReadsWithoutLogins(t *testing.T) {
	r := startRoot(t)
	a := NewAccess(AccessConfig{Self: "root", Root: true, Nodes: r.m.store, Tokens: r.m.tokens})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.KeepFresh(ctx, 100*time.Millisecond)
	time.Sleep(snapshotTTL + 300*time.Millisecond)
	a.mu.Lock()
	read := a.read
	a.mu.Unlock()
	if since := time.Since(read); read.IsZero() || since > snapshotTTL+200*time.Millisecond {
		t.Fatalf("last read %s ago with KeepFresh every 100 ms and no logins: want within the second", since)
	}
}
