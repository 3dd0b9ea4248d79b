package hierarchy

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
)

// secondMember is another root member's Manager over the same buckets: its own
// lock, so only the buckets order the two.
func secondMember(f rootFixture) *Manager {
	return NewManager(ManagerConfig{Store: f.m.store, Tokens: f.m.tokens, Status: f.m.status, Root: "root",
		RootMode: ReadWrite, Endpoints: f.m.rootEndpoints})
}

// interleave makes m run other once, between its first decision on op and that
// decision's write: the other member writes first.
func interleave(m *Manager, op string, other func()) {
	var once sync.Once
	m.beforeWrite = func(o, _ string) {
		if o == op {
			once.Do(other)
		}
	}
}

// TestTwoMembersUpdatingOneNodeLoseNothing: two root members update the same node
// at once. The one whose read is overtaken starts again from fresh state: both
// changes are kept (before, the loser got a 409 and its change was gone).
func TestTwoMembersUpdatingOneNodeLoseNothing(t *testing.T) {
	ctx := context.Background()
	f := startRoot(t)
	a, b := f.m, secondMember(f)
	if _, err := a.Create(ctx, "sitea", "", settings(ReadWrite, "team/*")); err != nil {
		t.Fatal(err)
	}
	add := func(m *Manager, p Pattern) error {
		_, err := m.Update(ctx, "sitea", UpdateRequest{AddRepositories: Scope{p}}.Apply)
		return err
	}
	var errB error
	interleave(a, "modify", func() { errB = add(b, "shop/*") })
	if err := add(a, "ops/*"); err != nil {
		t.Fatalf("member a's update, overtaken by member b's: %v", err)
	}
	if errB != nil {
		t.Fatalf("member b's update: %v", errB)
	}
	a.beforeWrite = nil

	// And many at once, from both members, with no hook.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := range 10 {
		for j, m := range []*Manager{a, b} {
			wg.Go(func() {
				if err := add(m, Pattern(fmt.Sprintf("m%d/r%d/*", j, i))); err != nil {
					mu.Lock()
					failed = append(failed, err.Error())
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	n, _, err := f.m.store.Get(ctx, "sitea")
	if err != nil {
		t.Fatal(err)
	}
	want := []Pattern{"team/*", "shop/*", "ops/*"}
	for i := range 10 {
		want = append(want, Pattern(fmt.Sprintf("m0/r%d/*", i)), Pattern(fmt.Sprintf("m1/r%d/*", i)))
	}
	for _, p := range want {
		if !slices.Contains(n.Settings.Repositories, p) {
			t.Errorf("sitea lost %s: it has %v", p, n.Settings.Repositories)
		}
	}
	for _, f := range failed {
		t.Errorf("a concurrent update failed: %s", f)
	}
}

// TestTreeRulesHoldAcrossMembers: a decision on the tree made at one member is
// written only if the tree did not change meanwhile. A child created under a parent
// another member deletes at the same time is refused, never left without its parent;
// a parent deleted while another member creates a child under it stays.
func TestTreeRulesHoldAcrossMembers(t *testing.T) {
	ctx := context.Background()
	f := startRoot(t)
	a, b := f.m, secondMember(f)
	if _, err := a.Create(ctx, "sitea", "", settings(ReadWrite, "team/*")); err != nil {
		t.Fatal(err)
	}

	var errB error
	interleave(a, "create", func() { errB = b.Delete(ctx, "sitea") })
	_, err := a.Create(ctx, "sitex", "sitea", settings(ReadOnly, "team/*"))
	if errB != nil {
		t.Fatalf("member b deletes sitea: %v", errB)
	}
	if err == nil {
		t.Fatalf("member a created sitex under sitea, which member b deleted meanwhile")
	}
	if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
		t.Errorf("member a's create under a deleted parent: %v, want it refused for the missing parent", err)
	}
	if _, _, err := f.m.store.Get(ctx, "sitex"); !errors.Is(err, ErrNotFound) {
		t.Errorf("sitex is stored without its parent (%v)", err)
	}

	if _, err := a.Create(ctx, "sitea", "", settings(ReadWrite, "team/*")); err != nil {
		t.Fatal(err)
	}
	interleave(a, "delete", func() { _, errB = b.Create(ctx, "sitex", "sitea", settings(ReadOnly, "team/*")) })
	err = a.Delete(ctx, "sitea")
	if errB != nil {
		t.Fatalf("member b creates sitex under sitea: %v", errB)
	}
	if !errors.Is(err, ErrConflict) || statusOf(err) != 409 {
		t.Errorf("member a deleting sitea while member b gave it a child: %v, want 409 (it has children)", err)
	}
	tree, err := f.m.Tree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tree.Get("sitea"); !ok {
		t.Errorf("sitea was deleted under its new child sitex")
	}
}

// A management call whose stores did not answer (a tier's bucket electing a
// leader, its retries given up) is a 503 with Retry-After, not a 500: `node list`
// in a failover's gap says to try again.
func TestManagementCallUnavailableIs503(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{&events.RetryableError{Op: "list keys", Err: context.DeadlineExceeded}, 503},
		{fmt.Errorf("gave up after 30 attempts in 30s: %w", &events.RetryableError{Op: "get sitea", Err: nats.ErrTimeout}), 503},
		{fmt.Errorf("%w: read node definitions", ErrUnavailable), 503},
		{fmt.Errorf("%w: node x", ErrNotFound), 404},
		{errors.New("disk full"), 500},
	} {
		rec := httptest.NewRecorder()
		writeResult(rec, 200, nil, c.err)
		if rec.Code != c.code || (c.code == 503) != (rec.Header().Get("Retry-After") != "") {
			t.Errorf("%v: %d, Retry-After %q; want %d, Retry-After only with 503", c.err, rec.Code, rec.Header().Get("Retry-After"), c.code)
		}
	}
}
