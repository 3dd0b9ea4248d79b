package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/registry/auth/token"

	"github.com/outpost-edge/outpost/events"
)

// staticAuth knows users whose password is "pw-" + name.
type staticAuth struct {
	mu    sync.Mutex
	users map[string]Principal
}

func (a *staticAuth) Login(user, pw string) (Principal, error) {
	p, err := a.Lookup(user)
	if err != nil || pw != "pw-"+user {
		return Principal{}, ErrBadCredentials
	}
	return p, nil
}

func (a *staticAuth) Lookup(user string) (Principal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.users[user]
	if !ok {
		return Principal{}, ErrBadCredentials
	}
	return p, nil
}

func (a *staticAuth) AnonymousPull() bool { return false }

func pullOn(prefix string) func(string) []string {
	return func(repo string) []string {
		if strings.HasPrefix(repo, prefix) {
			return []string{"pull"}
		}
		return nil
	}
}

// TestTokenFlowGrantsTheIntersection: the challenge names the realm and scope, the
// token endpoint grants only what the user may do, and the registry holds the
// token to it.
func TestTokenFlowGrantsTheIntersection(t *testing.T) {
	dir := t.TempDir()
	ns, err := events.StartServer(events.ServerConfig{Dir: dir + "/nats", Addr: "127.0.0.1:0", Name: "authnode"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log, err := events.OpenLog(context.Background(), nc, events.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	auth := &staticAuth{users: map[string]Principal{"reader": {User: "reader", Actions: pullOn("team/")}}}
	reg, err := New(context.Background(), Config{Dir: dir + "/registry", Node: "authnode", Publisher: log, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	mux := http.NewServeMux()
	mux.Handle("/v2/", reg)
	mux.Handle(TokenPath, reg.TokenHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(method, path, authz string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	resp := get(http.MethodGet, "/v2/team/app/tags/list", "")
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, `realm="`+srv.URL+TokenPath+`"`) ||
		!strings.Contains(ch, `service="authnode"`) || !strings.Contains(ch, `scope="repository:team/app:pull"`) {
		t.Fatalf("anonymous: %s, challenge %q", resp.Status, ch)
	}

	req, _ := http.NewRequest(http.MethodGet, srv.URL+TokenPath+"?service=authnode&scope=repository:team/app:pull,push&scope=repository:other/x:pull", nil)
	req.SetBasicAuth("reader", "pw-reader")
	tr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(tr.Body).Decode(&body); err != nil || body.Token == "" || body.ExpiresIn <= 0 {
		t.Fatalf("token endpoint: %s %v %+v", tr.Status, err, body)
	}
	tr.Body.Close()
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(body.Token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims token.ClaimSet
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if len(claims.Access) != 1 || claims.Access[0].Name != "team/app" || !slices.Equal(claims.Access[0].Actions, []string{"pull"}) {
		t.Fatalf("granted %+v, want only pull on team/app", claims.Access)
	}

	bearer := "Bearer " + body.Token
	if resp := get(http.MethodGet, "/v2/team/app/tags/list", bearer); resp.StatusCode != http.StatusNotFound {
		t.Errorf("granted pull on an empty repository: %s, want 404", resp.Status)
	}
	if resp := get(http.MethodPost, "/v2/team/app/blobs/uploads/", bearer); resp.StatusCode != http.StatusForbidden {
		t.Errorf("push without the right: %s, want 403", resp.Status)
	}
	if resp := get(http.MethodGet, "/v2/team/other/tags/list", bearer); resp.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("a repository the token was not issued for: %s %q, want 401 insufficient_scope", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	auth.mu.Lock()
	delete(auth.users, "reader")
	auth.mu.Unlock()
	if resp := get(http.MethodGet, "/v2/team/app/tags/list", bearer); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a token of a user who is gone: %s, want 401", resp.Status)
	}
	if resp := get(http.MethodGet, "/v2/team/app/tags/list", "Bearer not.a.jwt"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("garbage token: %s, want 401", resp.Status)
	}
}
