package test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/test/content"
)

// instanceOf is the process instance id a node's data directory holds.
func instanceOf(t testing.TB, n *Node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Data(), "instance"))
	if err != nil {
		t.Fatalf("instance of %s: %v", n.opts.Name, err)
	}
	return strings.TrimSpace(string(b))
}

// asProcessOf makes a registry client say it is n's running process, as a child's
// workers do toward their parent.
func asProcessOf(t testing.TB, n *Node) remote.Option {
	return remote.WithTransport(instanceHeader{instanceOf(t, n)})
}

type instanceHeader struct{ instance string }

func (h instanceHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if h.instance != "" {
		r.Header.Set(events.HeaderInstance, h.instance)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// rawGet sends one GET with basic credentials and an instance header ("" for none);
// anything but a 200 is an error with the body.
func rawGet(n *Node, path, user, pw, instance string) error {
	_, err := getWith(n, path, "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pw)), instance)
	return err
}

// getWith sends one GET with an Authorization header and an instance header ("" for
// none) and returns the body.
func getWith(n *Node, path, authz, instance string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, n.URL+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", authz)
	if instance != "" {
		req.Header.Set(events.HeaderInstance, instance)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return string(body), nil
}

// asChild logs in at a parent's gateway as one process instance of child.
type asChild struct {
	nc   *nats.Conn
	up   *hierarchy.Uplink
	mu   sync.Mutex
	errs []string // what the server said asynchronously (permission violations)
}

func dialAsChild(t *testing.T, parent *Node, child, pw, instance string) *asChild {
	t.Helper()
	c := &asChild{}
	nc, err := events.DialParent(parent.Gateway, child+"-sync", pw, child, instance,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc, c.up = nc, hierarchy.NewUplink(nc, child, instance)
	return c
}

// jsRequest sends a JetStream API request; a refused one times out, and the reason
// is what the server said meanwhile.
func (c *asChild) jsRequest(subject string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("%v (server said: %s)", err, strings.Join(c.errs, "; "))
	}
	if strings.Contains(string(msg.Data), `"error"`) {
		return fmt.Errorf("%s", msg.Data)
	}
	return nil
}

func (c *asChild) config() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.up.Config(ctx)
	return err
}

// waitForLog waits until a node has logged a line holding every one of parts.
func waitForLog(t *testing.T, n *Node, timeout time.Duration, parts ...string) {
	t.Helper()
	Eventually(t, timeout, func() error {
		for _, line := range strings.Split(n.Output(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return nil
			}
		}
		return fmt.Errorf("%s has not logged a line with %q", n.opts.Name, parts)
	})
}

func readyz(n *Node) (int, string) {
	resp, err := http.Get(n.URL + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDataDirectoryIsLocked: a second `outpost serve` on a data directory in use
// stops before it opens anything, naming the process that holds it; the lock goes
// with its holder, SIGKILL included.
func TestDataDirectoryIsLocked(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "sitelock", Mode: "ReadOnly", Repositories: []string{"app/*"}})
	second := func(n *Node, extra ...string) (string, error) {
		args := append([]string{"serve", "--data", n.Data(), "--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"}, extra...)
		return Run(t, time.Minute, Binary(t), args...)
	}
	for _, c := range []struct {
		name  string
		n     *Node
		extra []string
	}{
		{"a second root", root, []string{"--name", "root"}},
		// The lock comes before activation: not ALREADY_ACTIVATED, which would
		// mean the store was opened.
		{"a second process of a connected node", site, []string{"--connection-string-file", filepath.Join(site.Data(), "connection-string")}},
	} {
		out, err := second(c.n, c.extra...)
		want := fmt.Sprintf("data directory %s is in use by outpost pid %d since ", c.n.Data(), c.n.cmd.Process.Pid)
		if err == nil || !strings.Contains(out, want) || strings.Contains(out, "ALREADY_ACTIVATED") {
			t.Errorf("%s: %v\n%s\nwant a refusal saying %q", c.name, err, out, want)
		}
		if code, body := readyz(c.n); code != http.StatusOK {
			t.Errorf("%s: the first process is not ready any more: %d %s", c.name, code, body)
		}
	}
	// SIGKILL leaves the file behind; the kernel releases the lock with the process.
	pid := root.cmd.Process.Pid
	root.Kill()
	root.Start()
	if root.cmd.Process.Pid == pid {
		t.Fatal("the root did not restart")
	}
	out, err := second(root, "--name", "root")
	if want := fmt.Sprintf("in use by outpost pid %d since", root.cmd.Process.Pid); err == nil || !strings.Contains(out, want) {
		t.Errorf("after the restart: %v\n%s\nwant %q", err, out, want)
	}
}

// TestDeactivatedProcessIsFenced: `node deactivate` of a running node stops its
// process from moving content within a sync interval, and says why; a new process
// with the same connection string takes over; the old one, still running, is
// refused everywhere at its parent, and again when it restarts.
func TestDeactivatedProcessIsFenced(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	old := StartChild(t, root, Child{Name: "sitefence", Mode: "ReadWrite", Repositories: []string{"app/*"}})
	cs := old.opts.ConnectionString
	pw := csField(cs, "SyncTokenPassword")
	oldInstance := instanceOf(t, old)
	d1 := push(t, root, "app/x:1", content.Image(t, 1))
	eventuallyAt(t, "app/x:1", d1, old)

	// A registry token the old process got while it was active.
	body, err := getWith(root, "/outpost/v1/token?scope=repository:app/x:pull",
		"Basic "+base64.StdEncoding.EncodeToString([]byte("sitefence-sync:"+pw)), oldInstance)
	var tok struct{ Token string }
	if err != nil || jsonOf(body, &tok) != nil || tok.Token == "" {
		t.Fatalf("registry token for the active process: %v %s", err, body)
	}

	start := time.Now()
	root.MustCLI(t, "node", "deactivate", "sitefence")
	// The root closes the old process's gateway connection at once.
	waitForLog(t, root, 5*time.Second, "closed gateway connections of fenced processes", `"node":"sitefence"`)
	waitForLog(t, old, 10*time.Second, "this process is fenced", `"code":"DEACTIVATED"`, "was deactivated at the root")
	t.Logf("old process fenced %s after the deactivation (sync interval 2s)", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the old process took %s to stop; want about one sync interval (2s)", took)
	}
	d2 := push(t, root, "app/x:2", content.Image(t, 2))
	if code, body := readyz(old); code != http.StatusServiceUnavailable || !strings.Contains(body, "DEACTIVATED") {
		t.Errorf("old process /readyz: %d %s, want 503 naming DEACTIVATED", code, body)
	}
	if m := scrape(t, old); !strings.Contains(m, "\noutpost_fenced 1\n") {
		t.Errorf("old process /metrics does not say outpost_fenced 1")
	}
	if err := pushAs(t, old, "app/y:1", harnessAuth(old)); err == nil || !strings.Contains(err.Error(), "is fenced") {
		t.Errorf("push at the fenced process: %v, want a refusal saying it is fenced", err)
	}
	if err := pullAs(old, "app/x:1", harnessAuth(old)); err != nil {
		t.Errorf("the fenced process stopped serving pulls of what it has: %v", err)
	}
	Eventually(t, 10*time.Second, func() error {
		v := listNodes(t, root)["sitefence"]
		if v.Status == nil || v.Status.State != "Deactivated" {
			return fmt.Errorf("node list shows sitefence as %+v, want Deactivated", v.Status)
		}
		return nil
	})

	// A new process, another data directory, the same connection string.
	fresh := startNode(t, NodeOptions{Name: "sitefence", ConnectionString: cs}, root)
	newInstance := instanceOf(t, fresh)
	if newInstance == oldInstance {
		t.Fatal("the new process has the old one's instance")
	}
	eventuallyAt(t, "app/x:2", d2, fresh)
	d3 := push(t, root, "app/x:3", content.Image(t, 3))
	eventuallyAt(t, "app/x:3", d3, fresh)
	if m := scrape(t, fresh); !strings.Contains(m, "\noutpost_fenced 0\n") {
		t.Errorf("new process /metrics does not say outpost_fenced 0")
	}
	for _, ref := range []string{"app/x:2", "app/x:3"} {
		if got, _ := resolve(old, ref); got != "" {
			t.Errorf("%s reached the fenced process", ref)
		}
	}

	oldGW := dialAsChild(t, root, "sitefence", pw, oldInstance)
	newGW := dialAsChild(t, root, "sitefence", pw, newInstance)
	manifest := "/v2/app/x/manifests/1"
	fenced := "FENCED: node sitefence is active in another process since"
	for _, c := range []struct {
		name   string
		refuse bool
		want   []string
		do     func() error
	}{
		{name: "registry pull with the new instance (control)",
			do: func() error { return rawGet(root, manifest, "sitefence-sync", pw, newInstance) }},
		{name: "registry pull with the old instance", refuse: true, want: []string{"403", "DENIED", fenced},
			do: func() error { return rawGet(root, manifest, "sitefence-sync", pw, oldInstance) }},
		{name: "registry pull without an instance", refuse: true, want: []string{"403", fenced, "(without an instance id)"},
			do: func() error { return rawGet(root, manifest, "sitefence-sync", pw, "") }},
		{name: "registry token from before, with the old instance", refuse: true, want: []string{"403", "DENIED", fenced},
			do: func() error { _, err := getWith(root, manifest, "Bearer "+tok.Token, oldInstance); return err }},
		{name: "registry token from before, without an instance", refuse: true, want: []string{"403", fenced},
			do: func() error { _, err := getWith(root, manifest, "Bearer "+tok.Token, ""); return err }},
		{name: "token endpoint with the old instance", refuse: true, want: []string{"403", fenced},
			do: func() error {
				return rawGet(root, "/outpost/v1/token?scope=repository:app/x:pull", "sitefence-sync", pw, oldInstance)
			}},
		{name: "upstream push with the old instance", refuse: true, want: []string{"DENIED", fenced},
			do: func() error {
				return pushAs(t, root, "app/up:1", basic("sitefence-sync", pw), remote.WithTransport(instanceHeader{oldInstance}))
			}},
		{name: "gateway outbox with the new instance (control)",
			do: func() error { return newGW.jsRequest("$JS.API.CONSUMER.INFO.DOWN_sitefence.drain") }},
		{name: "gateway outbox with the old instance", refuse: true,
			want: []string{`Permissions Violation for Publish to "$JS.API.CONSUMER.INFO.DOWN_sitefence.drain"`},
			do:   func() error { return oldGW.jsRequest("$JS.API.CONSUMER.INFO.DOWN_sitefence.drain") }},
		{name: "gateway takes messages with the old instance", refuse: true,
			want: []string{`Permissions Violation for Publish to "$JS.API.CONSUMER.MSG.NEXT.DOWN_sitefence.drain"`},
			do:   func() error { return oldGW.jsRequest("$JS.API.CONSUMER.MSG.NEXT.DOWN_sitefence.drain") }},
		{name: "config with the new instance (control)", do: newGW.config},
		{name: "config with the old instance", refuse: true, want: []string{fenced, "process " + oldInstance[:8] + "… is fenced"},
			do: oldGW.config},
		{name: "activation with the old instance", refuse: true, want: []string{"ALREADY_ACTIVATED: node sitefence is active in another process"},
			do: func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := oldGW.up.Activate(ctx, "sitefence", oldInstance, hierarchy.Endpoints{})
				if err != nil && !errors.Is(err, hierarchy.ErrAlreadyActivated) {
					return fmt.Errorf("not typed ALREADY_ACTIVATED: %w", err)
				}
				return err
			}},
	} {
		err := c.do()
		switch {
		case !c.refuse && err != nil:
			t.Errorf("%s: %v, want it to work", c.name, err)
		case c.refuse && err == nil:
			t.Errorf("%s: worked, want it refused", c.name)
		case c.refuse:
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %v\nwant the refusal to say %q", c.name, err, w)
				}
			}
		}
	}
	if err := oldGW.config(); !errors.Is(err, hierarchy.ErrFenced) {
		t.Errorf("config with the old instance: %v, want a typed FENCED", err)
	}
	if strings.Contains(old.Output(), newInstance) {
		t.Error("the fenced process learned the new process's instance")
	}
	eventuallyAt(t, "app/x:1", d1, fresh)

	// The old process restarting on its own data directory is a second process.
	old.Stop()
	csFile := filepath.Join(t.TempDir(), "connection-string")
	if err := os.WriteFile(csFile, []byte(cs), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := Run(t, time.Minute, Binary(t), "serve", "--data", old.Data(), "--addr", "127.0.0.1:0",
		"--gateway-addr", "127.0.0.1:0", "--connection-string-file", csFile)
	if err == nil || !strings.Contains(out, "ALREADY_ACTIVATED: node sitefence is active in another process") {
		t.Errorf("old process restarted: %v, want ALREADY_ACTIVATED:\n%s", err, out)
	}
	d4 := push(t, root, "app/x:4", content.Image(t, 4))
	eventuallyAt(t, "app/x:4", d4, fresh)
}

// TestFencedGrandchildIsRefusedByItsParent: two levels down, the intermediate node
// learns a deactivation at its next sync and a relayed activation at once, and
// refuses the fenced process itself.
func TestFencedGrandchildIsRefusedByItsParent(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	mid := StartChild(t, root, Child{Name: "midfence", Mode: "ReadWrite", Repositories: []string{"app/*"}})
	old := StartChild(t, root, Child{Name: "leaffence", Parent: "midfence", Mode: "ReadOnly", Repositories: []string{"app/*"}})
	cs := old.opts.ConnectionString
	pw := csField(cs, "SyncTokenPassword")
	oldInstance := instanceOf(t, old)
	d1 := push(t, root, "app/x:1", content.Image(t, 1))
	eventuallyAt(t, "app/x:1", d1, mid, old)

	start := time.Now()
	root.MustCLI(t, "node", "deactivate", "leaffence")
	waitForLog(t, mid, 10*time.Second, "closed gateway connections of fenced processes", `"node":"leaffence"`)
	waitForLog(t, old, 15*time.Second, "this process is fenced", `"code":"DEACTIVATED"`)
	t.Logf("grandchild fenced %s after the deactivation (two levels of 2s syncs)", time.Since(start).Round(time.Millisecond))
	d2 := push(t, root, "app/x:2", content.Image(t, 2))

	fresh := startNode(t, NodeOptions{Name: "leaffence", ConnectionString: cs}, root)
	newInstance := instanceOf(t, fresh)
	eventuallyAt(t, "app/x:2", d2, fresh)
	// An event, not only the reconcile at activation: the new process drains its
	// outbox at the intermediate, which let it in as soon as it relayed the activation.
	d3 := push(t, root, "app/x:3", content.Image(t, 3))
	eventuallyAt(t, "app/x:3", d3, fresh)
	for _, ref := range []string{"app/x:2", "app/x:3"} {
		if got, _ := resolve(old, ref); got != "" {
			t.Errorf("%s reached the fenced grandchild", ref)
		}
	}
	oldGW := dialAsChild(t, mid, "leaffence", pw, oldInstance)
	newGW := dialAsChild(t, mid, "leaffence", pw, newInstance)
	fenced := "FENCED: node leaffence is active in another process since"
	if err := rawGet(mid, "/v2/app/x/manifests/1", "leaffence-sync", pw, newInstance); err != nil {
		t.Errorf("pull at the intermediate with the new instance: %v", err)
	}
	if err := rawGet(mid, "/v2/app/x/manifests/1", "leaffence-sync", pw, oldInstance); err == nil || !strings.Contains(err.Error(), fenced) {
		t.Errorf("pull at the intermediate with the old instance: %v, want %q", err, fenced)
	}
	if err := newGW.config(); err != nil {
		t.Errorf("config at the intermediate with the new instance: %v", err)
	}
	if err := oldGW.config(); !errors.Is(err, hierarchy.ErrFenced) || !strings.Contains(err.Error(), fenced) {
		t.Errorf("config at the intermediate with the old instance: %v, want %q", err, fenced)
	}
	if err := oldGW.jsRequest("$JS.API.CONSUMER.INFO.DOWN_leaffence.drain"); err == nil || !strings.Contains(err.Error(), "Permissions Violation") {
		t.Errorf("outbox at the intermediate with the old instance: %v, want a permissions violation", err)
	}
}

// TestProcessCutOffDuringATakeoverIsFencedOnReturn: a process that was out of
// reach while its node was deactivated and taken over by another process learns
// it is FENCED when its link comes back, and moves nothing.
func TestProcessCutOffDuringATakeoverIsFencedOnReturn(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	old := StartChild(t, root, Child{Name: "siteaway", Mode: "ReadWrite", Repositories: []string{"app/*"}, ThroughProxy: true})
	d1 := push(t, root, "app/x:1", content.Image(t, 1))
	eventuallyAt(t, "app/x:1", d1, old)

	old.GatewayProxy.SetDown(true)
	old.RegistryProxy.SetDown(true)
	root.MustCLI(t, "node", "deactivate", "siteaway")
	fresh := startNode(t, NodeOptions{Name: "siteaway", ConnectionString: old.opts.ConnectionString}, root)
	d2 := push(t, root, "app/x:2", content.Image(t, 2))
	eventuallyAt(t, "app/x:2", d2, fresh)
	// A push at the old process while it is away: it must not reach the tree.
	if err := pushAs(t, old, "app/away:1", harnessAuth(old)); err != nil {
		t.Fatalf("push at the old process while it is away (not fenced yet): %v", err)
	}

	back := time.Now()
	old.GatewayProxy.SetDown(false)
	old.RegistryProxy.SetDown(false)
	waitForLog(t, old, 15*time.Second, "this process is fenced", `"code":"FENCED"`, "is active in another process since")
	t.Logf("fenced %s after its link came back", time.Since(back).Round(time.Millisecond))
	d3 := push(t, root, "app/x:3", content.Image(t, 3))
	eventuallyAt(t, "app/x:3", d3, fresh)
	for _, c := range []struct {
		n   *Node
		ref string
	}{{old, "app/x:2"}, {old, "app/x:3"}, {root, "app/away:1"}, {fresh, "app/away:1"}} {
		if got, _ := resolve(c.n, c.ref); got != "" {
			t.Errorf("%s is at %s (process %s): the fenced process moved content", c.ref, c.n.opts.Name, c.n.Data())
		}
	}
	if code, body := readyz(old); code != http.StatusServiceUnavailable || !strings.Contains(body, "FENCED") {
		t.Errorf("old process /readyz: %d %s, want 503 naming FENCED", code, body)
	}
}
