package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/outpost-edge/outpost/test/content"
)

// pageRow is a node's row as the status page renders it (its data attributes
// and visible text), read from the DOM in the browser.
type pageRow struct {
	Node         string `json:"node"`
	State        string `json:"state"`
	UpMessages   string `json:"upMessages"`
	DownMessages string `json:"downMessages"`
	UpBytes      string `json:"upBytes"`
	DownBytes    string `json:"downBytes"`
	Text         string `json:"text"`
}

const rowsJS = `[...document.querySelectorAll('#nodes tr.node')].map(r => Object.assign({}, r.dataset, {text: r.innerText}))`

// screenshotDir is where page screenshots go: ./results/screenshots (make clean
// removes ./results).
func screenshotDir(t *testing.T) string {
	dir := filepath.Join(repoRoot(), "results", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// imageBytes is the content of an image's blobs (config and layers).
func imageBytes(t *testing.T, img v1.Image) uint64 {
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(m.Config.Size)
	for _, l := range m.Layers {
		n += uint64(l.Size)
	}
	return n
}

// signInThroughForm fills the page's sign-in form in the browser and submits it.
func signInThroughForm(t *testing.T, b *Browser, token string) {
	t.Helper()
	quoted, _ := json.Marshal(token)
	if err := b.Eval(`document.getElementById('token').value = `+string(quoted)+`; document.getElementById('login').submit(); true`, nil); err != nil {
		t.Fatal(err)
	}
}

// waitAt waits until the browser has loaded path (a form's answer).
func waitAt(t *testing.T, b *Browser, want string) {
	t.Helper()
	Eventually(t, 20*time.Second, func() error {
		path, errText, _, err := pageState(b)
		if err != nil {
			return err
		}
		if path != want {
			return fmt.Errorf("the browser is at %s (error shown: %q), want %s", path, errText, want)
		}
		return nil
	})
}

// pageState is where the browser is and what it shows.
func pageState(b *Browser) (path, errText, body string, err error) {
	var s struct{ Path, Err, Body, State string }
	err = b.Eval(`({Path: location.pathname, State: document.readyState, Err: (document.getElementById('error')||{}).innerText||'', Body: document.body ? document.body.innerText : ''})`, &s)
	if err == nil && s.State != "complete" {
		err = fmt.Errorf("document %s", s.State)
	}
	return s.Path, s.Err, s.Body, err
}

// TestStatusPageInChromium loads the status page in headless Chromium for a
// three-level tree (root; depotone under it, stopped; middle1, and under it
// shipone behind a closed window and storetwo stopped) and checks the rendered DOM: sign-in refused
// anonymously and with a wrong token, then every node's row with its state and
// what waits for it, the stopped site Offline with its pending message, the
// node page's repositories and events, and a site's own page with its parent
// link. Screenshots go to results/screenshots.
func TestStatusPageInChromium(t *testing.T) {
	clock := newFakeClock(t)
	clock.set(0, "12:00") // outside shipone's 02:00-04:00 window
	root := StartNode(t, NodeOptions{})
	mid := StartChild(t, root, Child{Name: "middle1", Mode: "ReadWrite", Repositories: []string{"fleet/*"}})
	StartChild(t, root, Child{Name: "shipone", Parent: "middle1", Mode: "ReadOnly", Repositories: []string{"fleet/*"},
		CreateArgs: []string{"--sync-schedule", "0 2 * * *", "--sync-window", "PT2H"},
		ServeArgs:  []string{"--clock-offset-file", clock.file}})
	store := StartChild(t, root, Child{Name: "storetwo", Parent: "middle1", Mode: "ReadOnly", Repositories: []string{"fleet/*"}})
	store.Stop()
	depot := StartChild(t, root, Child{Name: "depotone", Mode: "ReadOnly", Repositories: []string{"fleet/*"}})
	depot.Stop()

	img := content.Image(t, 2)
	d := push(t, root, "fleet/app:1", img)
	eventuallyAt(t, "fleet/app:1", d, mid)
	want := imageBytes(t, img)

	b := StartBrowser(t)
	// Anonymous: the sign-in form, nothing of the tree.
	b.Navigate(root.URL + "/")
	path, _, body, err := pageState(b)
	if err != nil || path != "/login" || strings.Contains(body, "middle1") {
		t.Fatalf("anonymous visit: at %s (%v), body:\n%s", path, err, body)
	}
	// A wrong token is refused, saying why.
	signInThroughForm(t, b, "not-the-admin-token")
	Eventually(t, 20*time.Second, func() error {
		path, errText, _, err := pageState(b)
		if err != nil {
			return err
		}
		if path != "/login" || !strings.Contains(errText, "Wrong token") {
			return fmt.Errorf("after a wrong token: at %s, error %q", path, errText)
		}
		return nil
	})
	b.Screenshot(filepath.Join(screenshotDir(t), "statuspage-login-refused.png"))
	signInThroughForm(t, b, AdminToken)
	waitAt(t, b, "/")

	// The root's tree, as rendered, until the stopped site is Offline and what
	// waits for both leaves shows.
	var rows map[string]pageRow
	Eventually(t, 90*time.Second, func() error {
		b.Navigate(root.URL + "/")
		path, _, _, err := pageState(b)
		if err != nil {
			return err
		}
		if path != "/" {
			return fmt.Errorf("signed in, the browser is at %s", path)
		}
		var list []pageRow
		if err := b.Eval(rowsJS, &list); err != nil {
			return err
		}
		rows = map[string]pageRow{}
		for _, r := range list {
			rows[r.Node] = r
		}
		wantRows := []struct{ node, state, down string }{
			{"root", "Online", ""}, {"middle1", "", ""},
			{"shipone", "Waiting", "1"}, {"storetwo", "Offline", "1"}, {"depotone", "Offline", "1"},
		}
		for _, w := range wantRows {
			r, ok := rows[w.node]
			switch {
			case !ok:
				return fmt.Errorf("no row for %s in %v", w.node, list)
			case w.state != "" && r.State != w.state:
				return fmt.Errorf("%s is %s, want %s", w.node, r.State, w.state)
			case w.state == "" && r.State != "Online" && r.State != "Syncing":
				return fmt.Errorf("%s is %s, want Online or Syncing", w.node, r.State)
			case w.down != "" && r.DownMessages != w.down:
				return fmt.Errorf("%s: %s messages wait for it, want %s", w.node, r.DownMessages, w.down)
			case w.down != "" && r.DownBytes != fmt.Sprint(want):
				return fmt.Errorf("%s: %s bytes wait for it, want the image's %d", w.node, r.DownBytes, want)
			}
		}
		return nil
	})
	if !strings.Contains(rows["storetwo"].Text, "OFFLINE") || !strings.Contains(rows["shipone"].Text, "closed") {
		t.Errorf("row texts: storetwo %q, shipone %q", rows["storetwo"].Text, rows["shipone"].Text)
	}
	// The management API's listing shows what waits for the offline sites too:
	// read at the root for its own child, relayed by middle1 for its child.
	var list []struct {
		Name   string
		Status *struct {
			State string
			Links []struct {
				Link            string
				PendingMessages uint64
				PendingBytes    uint64
			}
		}
	}
	if err := jsonOf(root.MustCLI(t, "node", "list", "--output", "json"), &list); err != nil {
		t.Fatal(err)
	}
	for _, v := range list {
		if v.Name != "depotone" && v.Name != "storetwo" {
			continue
		}
		ok := false
		for _, l := range v.Status.Links {
			ok = ok || (l.Link == "downstream" && l.PendingMessages == 1 && l.PendingBytes == want)
		}
		if v.Status.State != "Offline" || !ok {
			t.Errorf("node list: %s %+v, want Offline with 1 message and %d bytes waiting for it", v.Name, *v.Status, want)
		}
	}
	dir := screenshotDir(t)
	b.Screenshot(filepath.Join(dir, "statuspage-root.png"))

	// A node's page: its repositories and recent events.
	b.Navigate(root.URL + "/node/shipone")
	_, _, body, err = pageState(b)
	if err != nil || !strings.Contains(body, "fleet/app") || !strings.Contains(body, "push") || !strings.Contains(body, "Waiting") {
		t.Fatalf("node page (%v):\n%s", err, body)
	}
	b.Screenshot(filepath.Join(dir, "statuspage-node.png"))

	// The middle site's own page: its parent link, itself and its children; the
	// root's session does not open it.
	b.Navigate(mid.URL + "/")
	if path, _, _, _ := pageState(b); path != "/login" {
		t.Fatalf("the root's session opened the site's page (at %s)", path)
	}
	signInThroughForm(t, b, mid.operatorToken())
	waitAt(t, b, "/")
	Eventually(t, 20*time.Second, func() error {
		path, _, body, err := pageState(b)
		if err != nil {
			return err
		}
		if path != "/" || !strings.Contains(body, "Link to parent root") || !strings.Contains(body, "storetwo") {
			return fmt.Errorf("site page at %s:\n%s", path, body)
		}
		return nil
	})
	b.Screenshot(filepath.Join(dir, "statuspage-site.png"))
	t.Logf("screenshots in %s", dir)
}

// TestStatusAtASiteWithItsParentStopped runs `outpost status` at a site whose
// parent is stopped: it answers from the site itself, with the link down, what
// waits to go up (messages, and the image's content: the parent cannot be asked
// what it has, and never was) and what waits for its stopped child.
func TestStatusAtASiteWithItsParentStopped(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "shopone", Mode: "ReadWrite", Repositories: []string{"shop/*"}})
	leaf := StartChild(t, root, Child{Name: "tillone", Parent: "shopone", Mode: "ReadOnly", Repositories: []string{"shop/*"}})
	d := push(t, root, "shop/a:1", content.Image(t, 1))
	eventuallyAt(t, "shop/a:1", d, site, leaf)
	type link struct {
		PendingMessages uint64
		PendingBytes    uint64
	}
	var st struct {
		Node   string
		State  string
		Parent *struct {
			Name       string
			Connected  bool
			Upstream   *link
			Downstream *struct {
				link
				AsOf time.Time
			}
		}
		Children []struct {
			Node   string
			Parent string
			State  string
			Links  []struct {
				Link string
				link
			}
		}
	}
	// The copy's ack is sent on its own: wait until root has told the site, in
	// answer to a status report, that nothing waits there any more.
	Eventually(t, 20*time.Second, func() error {
		out, err := site.CLI(t, "status", "--output", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := jsonOf(out, &st); err != nil {
			return err
		}
		if st.Parent == nil || st.Parent.Downstream == nil || st.Parent.Downstream.PendingMessages != 0 {
			return fmt.Errorf("root's last word on what waits for the site: %+v", st.Parent)
		}
		return nil
	})
	// A ReadOnly node sends nothing up: no upstream link in its own status, in its
	// report to its parent, or in what the parent shows of it.
	Eventually(t, 20*time.Second, func() error {
		var leafSt struct {
			Links  []struct{ Link string }
			Parent *struct{ Upstream *link }
		}
		out, err := leaf.CLI(t, "status", "--output", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := jsonOf(out, &leafSt); err != nil {
			return err
		}
		if leafSt.Parent == nil || leafSt.Parent.Upstream != nil {
			return fmt.Errorf("ReadOnly tillone's parent link: %s", out)
		}
		for _, l := range leafSt.Links {
			if l.Link == "upstream" {
				return fmt.Errorf("ReadOnly tillone reports an upstream link: %s", out)
			}
		}
		if out, err = site.CLI(t, "status", "--output", "json"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := jsonOf(out, &st); err != nil {
			return err
		}
		for _, c := range st.Children {
			for _, l := range c.Links {
				if c.Node == "tillone" && l.Link == "upstream" {
					return fmt.Errorf("shopone shows an upstream link for ReadOnly tillone: %+v", c.Links)
				}
			}
		}
		return nil
	})
	leaf.Stop()
	root.Stop()

	img := content.Image(t, 2)
	push(t, site, "shop/b:1", img)
	want := imageBytes(t, img)

	Eventually(t, 60*time.Second, func() error {
		out, err := site.CLI(t, "status", "--output", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := jsonOf(out, &st); err != nil {
			return err
		}
		switch {
		case st.Parent == nil || st.Parent.Name != "root" || st.Parent.Connected:
			return fmt.Errorf("parent link: %+v, want root not connected", st.Parent)
		case st.Parent.Upstream == nil || st.Parent.Upstream.PendingMessages != 1 || st.Parent.Upstream.PendingBytes != want:
			return fmt.Errorf("upstream pending %+v, want 1 message and the image's %d bytes", st.Parent.Upstream, want)
		case st.Parent.Downstream == nil || st.Parent.Downstream.AsOf.IsZero() || st.Parent.Downstream.PendingMessages != 0:
			return fmt.Errorf("downstream %+v, want what root last said waits there (nothing), with its time", st.Parent.Downstream)
		case len(st.Children) != 1 || st.Children[0].Node != "tillone" || st.Children[0].State != "Offline":
			return fmt.Errorf("children %+v, want tillone Offline", st.Children)
		}
		for _, l := range st.Children[0].Links {
			if l.Link == "downstream" && l.PendingMessages == 1 && l.PendingBytes == want {
				return nil
			}
		}
		return fmt.Errorf("tillone's links %+v: want 1 message and %d bytes waiting for it", st.Children[0].Links, want)
	})

	out := site.MustCLI(t, "status")
	t.Logf("outpost status at shopone with root stopped:\n%s", out)
	for _, w := range []string{
		"shopone: Offline",
		"PARENT_UNREACHABLE",
		"parent root: NOT connected",
		"downstream (at root, for this node): 0 messages, 0 bytes to move as of ",
		fmt.Sprintf("upstream (here, for root):   1 messages, %d bytes", want),
		"tillone", "Offline", fmt.Sprintf("1 messages, %d bytes", want),
	} {
		if !strings.Contains(out, w) {
			t.Errorf("outpost status lacks %q", w)
		}
	}
}
