package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/events/eventstest"
	"github.com/outpost-edge/outpost/test/content"
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
	_, nc := eventstest.StartServer(t, events.ServerConfig{Dir: dir + "/nats", Name: "authnode"})
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

// headerRoundTripper adds headers to every request.
type headerRoundTripper struct{ h http.Header }

func (t headerRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header[k] = v
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestSyncTokenSpeaksOnlyForItsSubtree: a child's sync token may say a change was
// first made at the child or at a node under it, and the event says so; an origin
// anywhere else (this node, a sibling, a made-up name) is refused with the reason,
// and leaves no event. The node's own replication user names any origin.
func TestSyncTokenSpeaksOnlyForItsSubtree(t *testing.T) {
	all := func(string) []string { return []string{"pull", "push", "delete"} }
	auth := &staticAuth{users: map[string]Principal{
		"factory-sync": {User: "factory-sync", Peer: "factory", Actions: all,
			Relays: func(n string) bool { return n == "lineone" || n == "linetwo" }},
		"island-sync": {User: "island-sync", Peer: "island", Actions: all}, // a leaf: Relays nil
	}}
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, func(c *Config) {
		c.Auth = auth
		c.InternalPassword = "internal-secret"
	})
	push := func(t *testing.T, user, pw, origin, repo string) error {
		h := http.Header{}
		if origin != "" {
			h.Set(events.HeaderOrigin, origin)
		}
		return remote.Write(tr.ref(t, repo+":1"), content.Image(t, 1),
			remote.WithAuth(&authn.Basic{Username: user, Password: pw}),
			remote.WithTransport(headerRoundTripper{h}), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	}
	for i, c := range []struct {
		name, user, pw, origin string
		want                   string // the event's origin, or the refusal's words
		refused                bool
	}{
		{name: "no header", user: "factory-sync", pw: "pw-factory-sync", want: "factory"},
		{name: "the child itself", user: "factory-sync", pw: "pw-factory-sync", origin: "factory", want: "factory"},
		{name: "a node under the child", user: "factory-sync", pw: "pw-factory-sync", origin: "linetwo", want: "linetwo"},
		{name: "this node", user: "factory-sync", pw: "pw-factory-sync", origin: "testnode", refused: true,
			want: `Outpost-Origin header "testnode": the sync token of node factory speaks only for factory and the nodes under it`},
		{name: "a sibling", user: "factory-sync", pw: "pw-factory-sync", origin: "island", refused: true,
			want: `Outpost-Origin header "island": the sync token of node factory speaks only for factory`},
		{name: "a made-up node", user: "factory-sync", pw: "pw-factory-sync", origin: "nowhere", refused: true,
			want: `Outpost-Origin header "nowhere"`},
		{name: "a leaf naming another's child", user: "island-sync", pw: "pw-island-sync", origin: "lineone", refused: true,
			want: `the sync token of node island speaks only for island`},
		{name: "the replication user", user: events.ReplicaUser, pw: "internal-secret", origin: "anywhere", want: "anywhere"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(tr.events(t))
			repo := fmt.Sprintf("team/case%d", i)
			err := push(t, c.user, c.pw, c.origin, repo)
			got := tr.events(t)[before:]
			if c.refused {
				var terr *transport.Error
				if !errors.As(err, &terr) || terr.StatusCode != http.StatusForbidden {
					t.Fatalf("push: %v, want 403", err)
				}
				req, _ := http.NewRequest(http.MethodPost, tr.URL+"/v2/"+repo+"/blobs/uploads/", nil)
				req.SetBasicAuth(c.user, c.pw)
				req.Header.Set(events.HeaderOrigin, c.origin)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if msg := ociMessage(resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(msg, c.want) {
					t.Fatalf("upload: %s %s, want 403 saying %q", resp.Status, msg, c.want)
				}
				if len(got) != 0 {
					t.Fatalf("a refused push left events: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if len(got) == 0 || got[len(got)-1].Origin != c.want {
				t.Fatalf("events %v: want the last with origin %s", got, c.want)
			}
		})
	}
	// A read makes no event: a copier reading its source with its event's origin
	// (any origin) is served.
	req, _ := http.NewRequest(http.MethodGet, tr.URL+"/v2/team/case0/manifests/1", nil)
	req.SetBasicAuth("factory-sync", "pw-factory-sync")
	req.Header.Set(events.HeaderOrigin, "testnode")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a read by factory-sync naming origin testnode: %s, want 200", resp.Status)
	}
}

// awayAuth cannot check anything: its stores do not answer.
type awayAuth struct{}

func (awayAuth) Login(user, pw string) (Principal, error) {
	return Principal{}, fmt.Errorf("%w: read node definitions: nats: JetStream system temporarily unavailable", ErrUnavailable)
}
func (a awayAuth) Lookup(user string) (Principal, error) { return a.Login(user, "") }
func (awayAuth) AnonymousPull() bool                     { return false }

// TestLoginTheRulesCannotCheckIs503: a login the access rules cannot decide (their
// stores away) answers 503 UNAVAILABLE with Retry-After, at the registry and the
// token endpoint, and does not count as a failed login: more of them than the
// failed-login burst never turn into 429. Before, it was a 401 that sent clients
// away as if their credentials were wrong.
func TestLoginTheRulesCannotCheckIs503(t *testing.T) {
	dir := t.TempDir()
	_, nc := eventstest.StartServer(t, events.ServerConfig{Dir: dir + "/nats", Name: "authnode"})
	log, err := events.OpenLog(context.Background(), nc, events.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := New(context.Background(), Config{Dir: dir + "/registry", Node: "authnode", Publisher: log, Auth: awayAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	mux := http.NewServeMux()
	mux.Handle("/v2/", reg)
	mux.Handle(TokenPath, reg.TokenHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for i := range events.FailedLoginBurst + 3 {
		for _, path := range []string{"/v2/team/app/tags/list", TokenPath + "?service=authnode&scope=repository:team/app:pull"} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			req.SetBasicAuth("ci", "pw-ci")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Errors []struct{ Code, Message string }
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" || !strings.Contains(body.Errors[0].Message, "try again") {
				t.Fatalf("login %d at %s: %s (Retry-After %q) %+v, want 503 UNAVAILABLE saying to try again",
					i, path, resp.Status, resp.Header.Get("Retry-After"), body.Errors)
			}
		}
	}
}
