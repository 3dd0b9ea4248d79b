package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/node"
	"github.com/outpost-edge/outpost/node/nodetest"
)

// startRootAndSite starts a root with rootCfg and under it a ReadWrite site,
// sitea (repositories app/*), with client token ci (push and pull on app/*) bound
// to it, both in this process.
func startRootAndSite(t *testing.T, rootCfg node.Config) (root, site *node.Node, ci hierarchy.TokenView) {
	t.Helper()
	root = nodetest.Start(t, rootCfg)
	rootURL := "http://" + root.HTTPAddr()
	admin := func(method, path string, body, out any) {
		t.Helper()
		if err := call(method, rootURL+path, nodetest.AdminToken, body, out); err != nil {
			t.Fatal(err)
		}
	}
	admin(http.MethodPost, "/outpost/v1/nodes", hierarchy.CreateRequest{Name: "sitea", Settings: hierarchy.Settings{
		Mode: hierarchy.ReadWrite, Repositories: []hierarchy.Pattern{"app/*"}}}, nil)
	rule, err := hierarchy.ParseScopeRule("app/*=pull,push")
	if err != nil {
		t.Fatal(err)
	}
	admin(http.MethodPost, "/outpost/v1/tokens", hierarchy.TokenCreateRequest{Name: "ci", Repositories: hierarchy.ScopeMap{rule}}, &ci)
	admin(http.MethodPatch, "/outpost/v1/nodes/sitea", hierarchy.UpdateRequest{AddClientTokens: []string{"ci"}}, nil)
	var settings struct {
		ConnectionString string `json:"connectionString"`
	}
	admin(http.MethodPost, "/outpost/v1/nodes/sitea/settings", nil, &settings)
	cfg := nodetest.Config(t)
	cfg.ConnectionString = settings.ConnectionString
	return root, nodetest.Start(t, cfg), ci
}

// TestNodesInOneProcess: a root and a ReadWrite site run as libraries in this
// process, the site connected to the root with the connection string the root's
// management API gave; an image pushed at the site reaches the root, and one
// pushed at the root reaches the site.
func TestNodesInOneProcess(t *testing.T) {
	root, site, tok := startRootAndSite(t, nodetest.Config(t))
	if site.Name() != "sitea" {
		t.Errorf("site's name %q, want sitea (from its connection string)", site.Name())
	}
	ci := &authn.Basic{Username: "ci", Password: tok.Password}
	rootAdmin := &authn.Basic{Username: "admin", Password: nodetest.AdminToken}

	t.Log("site serving")
	up := push(t, site.HTTPAddr(), "app/up:v1", ci)
	waitFor(t, 30*time.Second, func() error { return sameDigest(root.HTTPAddr(), "app/up:v1", up, rootAdmin) })
	t.Log("up at root")
	down := push(t, root.HTTPAddr(), "app/down:v1", rootAdmin)
	waitFor(t, 30*time.Second, func() error { return sameDigest(site.HTTPAddr(), "app/down:v1", down, ci) })
	t.Log("down at site")
}

// TestTwoRootsInOneProcess: two roots with their own data directories run side by
// side in one process and keep apart (what three members of a root tier need); one
// shut down lets go of its data directory and starts again on it in the same
// process, with what it held.
func TestTwoRootsInOneProcess(t *testing.T) {
	a, b := nodetest.Config(t), nodetest.Config(t)
	b.Name = "rootb"
	ra, rb := nodetest.Start(t, a), nodetest.Start(t, b)
	admin := &authn.Basic{Username: "admin", Password: nodetest.AdminToken}
	d := push(t, ra.HTTPAddr(), "app/one:v1", admin)
	if err := sameDigest(ra.HTTPAddr(), "app/one:v1", d, admin); err != nil {
		t.Fatal(err)
	}
	if err := sameDigest(rb.HTTPAddr(), "app/one:v1", d, admin); err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Fatalf("the other root: %v, want MANIFEST_UNKNOWN", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ra.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sameDigest(ra.HTTPAddr(), "app/one:v1", d, admin); err == nil {
		t.Fatal("a root that was shut down still serves")
	}
	again := nodetest.Start(t, a)
	if err := sameDigest(again.HTTPAddr(), "app/one:v1", d, admin); err != nil {
		t.Fatalf("after a restart on the same data directory: %v", err)
	}
}

// TestNewRefusesBadConfigNamingIt: New writes nothing and says what is wrong.
func TestNewRefusesBadConfigNamingIt(t *testing.T) {
	for _, c := range []struct {
		change func(*node.Config)
		want   string
	}{
		{func(c *node.Config) { c.Name = "ab" }, `name "ab"`},
		{func(c *node.Config) { c.Mode = "Sideways" }, `mode "Sideways"`},
		{func(c *node.Config) { c.MessageTTL = time.Hour }, "P1D to P90D"},
		{func(c *node.Config) { c.ConnectionString = "nonsense" }, "connection string"},
		{func(c *node.Config) { c.TLSCertFile = "cert.pem" }, "--tls-cert and --tls-key go together"},
		{func(c *node.Config) { c.StatusInterval = 0 }, "status interval"},
		{func(c *node.Config) { c.DataDir = "" }, "data directory"},
	} {
		cfg := nodetest.Config(t)
		c.change(&cfg)
		if _, err := node.New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New: %v, want an error with %q", err, c.want)
		}
	}
}

// push writes a random image to host/ref and returns its digest.
func push(t *testing.T, host, ref string, auth authn.Authenticator) string {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(auth)); err != nil {
		t.Fatalf("push %s to %s: %v", ref, host, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// sameDigest says whether host/ref is the manifest want.
func sameDigest(host, ref, want string, auth authn.Authenticator) error {
	r, err := name.ParseReference(host+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Head(r, remote.WithAuth(auth))
	if err != nil {
		// HEAD answers carry no error body: GET says why.
		if _, gerr := remote.Get(r, remote.WithAuth(auth)); gerr != nil {
			return fmt.Errorf("%s at %s: %w", ref, host, gerr)
		}
		return fmt.Errorf("%s at %s: %w", ref, host, err)
	}
	if desc.Digest.String() != want {
		return fmt.Errorf("%s at %s is %s, want %s", ref, host, desc.Digest, want)
	}
	return nil
}

// call sends a management API request with the admin token and decodes the answer.
func call(method, url, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// waitFor polls fn until it holds; its last error says what is not yet true.
func waitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	err := errors.New("never tried")
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after %s: %v", timeout, err)
}

// TestStopWhileStartingIsAStop: a node asked to stop while it starts (a supervisor's
// SIGTERM during start-up) stops cleanly, as serve's exit status says, at whatever
// point of its start the stop came, and leaves its data directory to the next one.
func TestStopWhileStartingIsAStop(t *testing.T) {
	cfg := nodetest.Config(t)
	for _, after := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 200 * time.Millisecond} {
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- n.Run(ctx) }()
		time.Sleep(after)
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("stopped %s into its start: %v, want a clean stop", after, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("stopped %s into its start: still running after a minute", after)
		}
	}
}

// TestWrongOperatorTokensAreLimited: the node's own operator endpoints (status,
// scrub, gc, sync, events) refuse an address past a burst of wrong tokens, before
// any compare, the right token included, as the management API and logins do.
func TestWrongOperatorTokensAreLimited(t *testing.T) {
	root := nodetest.Start(t, nodetest.Config(t))
	status := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+root.HTTPAddr()+"/outpost/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := status(nodetest.AdminToken); code != http.StatusOK {
		t.Fatalf("the admin token: %d %s", code, body)
	}
	// Each wrong token costs a bcrypt compare (about 1 s under -race), and a try
	// comes back every 6 s: keep on until the limit shows.
	limited := 0
	for i := 0; limited == 0 && i < 40; i++ {
		code, body := status(fmt.Sprintf("wrong-%d", i))
		switch code {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			if !strings.Contains(body, "too many wrong operator tokens from 127.0.0.1") {
				t.Errorf("refusal past the burst: %s", body)
			}
			limited++
		default:
			t.Fatalf("wrong token %d: %d %s", i, code, body)
		}
	}
	if limited == 0 {
		t.Error("40 wrong operator tokens, none limited")
	}
	if code, _ := status(nodetest.AdminToken); code != http.StatusTooManyRequests {
		t.Errorf("the admin token right after the burst: %d, want 429", code)
	}
}
