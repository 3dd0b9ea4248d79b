package hierarchy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBindingNeedsAnExistingToken: a node is never bound to a client token that does
// not exist, at create or at update, through the manager or the API; deleting a
// token unbinds it first, and a binding left from older data blocks creating the
// name again until it is removed, so no token inherits a binding made for another.
func TestBindingNeedsAnExistingToken(t *testing.T) {
	m := startManager(t)
	ctx := context.Background()
	api := httptest.NewServer(NewAPI(m, func(tok string) bool { return tok == "admin-secret" }, time.Minute))
	t.Cleanup(api.Close)
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, api.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Error
	}
	const ghost = `client token "ghost" does not exist: create it first with ` + "`outpost token create ghost`"

	s := settings(ReadWrite, "plant/*")
	s.ClientTokens = []string{"ghost"}
	if _, err := m.Create(ctx, "factory", "", s); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), ghost) {
		t.Errorf("create bound to an unknown token: %v, want ErrInvalid saying %q", err, ghost)
	}
	if code, msg := call(http.MethodPost, "/outpost/v1/nodes",
		`{"name":"factory","settings":{"mode":"ReadWrite","repositories":["plant/*"],"clientTokens":["ghost"]}}`); code != http.StatusBadRequest || !strings.Contains(msg, ghost) {
		t.Errorf("API create bound to an unknown token: %d %q, want 400 saying %q", code, msg, ghost)
	}
	if _, _, err := m.store.Get(ctx, "factory"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create left the node: %v", err)
	}
	if _, err := m.Create(ctx, "factory", "", settings(ReadWrite, "plant/*")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(ctx, "factory", UpdateRequest{AddClientTokens: []string{"ghost"}}.Apply); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), ghost) {
		t.Errorf("update binding an unknown token: %v, want ErrInvalid saying %q", err, ghost)
	}
	if code, msg := call(http.MethodPatch, "/outpost/v1/nodes/factory", `{"addClientTokens":["ghost"]}`); code != http.StatusBadRequest || !strings.Contains(msg, ghost) {
		t.Errorf("API update binding an unknown token: %d %q, want 400 saying %q", code, msg, ghost)
	}

	// Bound, then deleted: the binding goes first; the same name created again is bound nowhere.
	if _, _, err := m.CreateToken(ctx, "ci", ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}}); err != nil {
		t.Fatal(err)
	}
	s = settings(ReadWrite, "plant/*")
	s.ClientTokens = []string{"ci"}
	if _, err := m.Create(ctx, "warehouse", "", s); err != nil {
		t.Fatalf("create bound to an existing token: %v", err)
	}
	if _, err := m.Update(ctx, "factory", UpdateRequest{AddClientTokens: []string{"ci"}}.Apply); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := m.TokenNodes(ctx, "ci"); len(nodes) != 0 {
		t.Fatalf("deleted token still bound to %v", nodes)
	}
	_, pw, err := m.CreateToken(ctx, "ci", ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	factory := NewAccess(AccessConfig{Self: "factory", Nodes: m.store, Tokens: m.tokens})
	if _, err := factory.Login("ci", pw); err == nil || !strings.Contains(err.Error(), "token ci is not bound to node factory") {
		t.Errorf("a token created again under a deleted token's name, at a node the old one was bound to: %v, want not bound", err)
	}

	// A binding left from older data (written past the manager) blocks the name.
	n, rev, err := m.store.Get(ctx, "warehouse")
	if err != nil {
		t.Fatal(err)
	}
	n.Settings.ClientTokens = append(n.Settings.ClientTokens, "stale")
	if err := m.store.Update(ctx, n, rev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.CreateToken(ctx, "stale", ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}}); !errors.Is(err, ErrConflict) ||
		!strings.Contains(err.Error(), `client token "stale": node(s) warehouse still name it`) {
		t.Errorf("creating a name a node still binds: %v, want ErrConflict naming warehouse", err)
	}
	if _, err := m.Update(ctx, "warehouse", UpdateRequest{RemoveClientTokens: []string{"stale"}}.Apply); err != nil {
		t.Fatalf("removing a stale binding: %v", err)
	}
	if _, _, err := m.CreateToken(ctx, "stale", ScopeMap{{Repository: "plant/*", Actions: []string{"pull"}}}); err != nil {
		t.Errorf("creating the name once unbound: %v", err)
	}
}
