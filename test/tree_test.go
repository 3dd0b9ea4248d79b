package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// replicationTimeout bounds how long a change may take to cross the test tree.
const replicationTimeout = 60 * time.Second

// resolve returns the digest a reference has at a node, or "" if it has none.
func resolve(n *Node, ref string) (string, error) {
	r, err := name.ParseReference(n.Host+"/"+ref, name.Insecure)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r, Auth)
	if err != nil {
		if strings.Contains(err.Error(), "404") || strings.Contains(err.Error(), "MANIFEST_UNKNOWN") || strings.Contains(err.Error(), "NAME_UNKNOWN") {
			return "", nil
		}
		return "", err
	}
	return d.Digest.String(), nil
}

// eventuallyAt waits until ref resolves to want ("" for absent) at every node.
func eventuallyAt(t *testing.T, ref, want string, nodes ...*Node) {
	t.Helper()
	Eventually(t, replicationTimeout, func() error {
		var wrong []string
		for _, n := range nodes {
			got, err := resolve(n, ref)
			if err != nil {
				return fmt.Errorf("%s at %s: %v", ref, n.opts.Name, err)
			}
			if got != want {
				wrong = append(wrong, fmt.Sprintf("%s has %q", n.opts.Name, got))
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%s should be %q: %s", ref, want, strings.Join(wrong, ", "))
		}
		return nil
	})
}

func push(t *testing.T, n *Node, ref string, img v1.Image) string {
	t.Helper()
	r, err := name.ParseReference(n.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, Auth); err != nil {
		t.Fatalf("push %s at %s: %v", ref, n.opts.Name, err)
	}
	return content.Digest(t, img)
}

type nodeView struct {
	Name     string
	Parent   string
	Settings struct {
		Repositories []string
		LogLevel     string
	}
	Status *struct {
		State        string
		LastSync     time.Time
		LogLevel     string
		Repositories []string
	}
}

func listNodes(t *testing.T, root *Node) map[string]nodeView {
	t.Helper()
	var vs []nodeView
	if err := json.Unmarshal([]byte(root.MustCLI(t, "node", "list", "--output", "json")), &vs); err != nil {
		t.Fatal(err)
	}
	out := map[string]nodeView{}
	for _, v := range vs {
		out[v.Name] = v
	}
	return out
}

// TestTreeReplicatesByEventsAcrossLevels is the hierarchy's whole story on one tree:
// root -> sitea (ReadWrite) -> siteb (ReadWrite) -> sitec (ReadOnly), and siteatwo
// (ReadOnly, team/app only) under the root.
func TestTreeReplicatesByEventsAcrossLevels(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	a := StartChild(t, root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: []string{"team/*"}})
	b := StartChild(t, root, Child{Name: "siteb", Parent: "sitea", Mode: "ReadWrite", Repositories: []string{"team/*"}})
	c := StartChild(t, root, Child{Name: "sitec", Parent: "siteb", Mode: "ReadOnly", Repositories: []string{"team/*"}})
	a2 := StartChild(t, root, Child{Name: "siteatwo", Mode: "ReadOnly", Repositories: []string{"team/app"}})
	all := []*Node{root, a, b, c, a2}

	// A push at the ReadOnly leaf is refused.
	cr, _ := name.ParseReference(c.Host+"/team/app:no", name.Insecure)
	if err := remote.Write(cr, content.Image(t, 1), Auth); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("push at ReadOnly sitec: %v, want a read-only refusal", err)
	}

	// A push at b reaches its parent, the root, and every node in scope below them.
	pushed := time.Now()
	d1 := push(t, b, "team/app:1", content.Image(t, 2))
	eventuallyAt(t, "team/app:1", d1, all...)

	// A push at the root reaches every level.
	d2 := push(t, root, "team/app:2", content.Image(t, 1))
	eventuallyAt(t, "team/app:2", d2, all...)

	// Out of scope: team/other never reaches siteatwo.
	d3 := push(t, a, "team/other:1", content.Image(t, 1))
	eventuallyAt(t, "team/other:1", d3, root, a, b, c)

	// A multi-arch index and an artifact that refers to it, as oras attach or cosign
	// make, arrive with the same digests everywhere.
	idx, err := random.Index(512, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	ir, _ := name.ParseReference(b.Host+"/team/app:multi", name.Insecure)
	if err := remote.WriteIndex(ir, idx, Auth); err != nil {
		t.Fatal(err)
	}
	di := content.Digest(t, idx)
	idxDesc, err := remote.Head(ir, Auth)
	if err != nil {
		t.Fatal(err)
	}
	sbom := content.Artifact(t, "application/spdx+json", idxDesc)
	ds := content.Digest(t, sbom)
	push(t, b, "team/app@"+ds, sbom)
	eventuallyAt(t, "team/app:multi", di, all...)
	eventuallyAt(t, "team/app@"+ds, ds, all...)
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, child := range m.Manifests {
		eventuallyAt(t, "team/app@"+child.Digest.String(), child.Digest.String(), c, a2)
	}
	for _, n := range []*Node{root, c, a2} {
		refs, err := remote.Referrers(mustDigestRef(t, n, "team/app@"+di), Auth)
		if err != nil {
			t.Fatal(err)
		}
		rm, _ := refs.IndexManifest()
		if len(rm.Manifests) != 1 || rm.Manifests[0].Digest.String() != ds {
			t.Errorf("referrers of the index at %s: %+v, want the sbom %s", n.opts.Name, rm.Manifests, ds)
		}
	}

	// Deletes propagate both ways: a tag deleted at the root, a manifest at b.
	if err := remote.Delete(mustRef(t, root, "team/app:2"), Auth); err != nil {
		t.Fatal(err)
	}
	eventuallyAt(t, "team/app:2", "", all...)
	if err := remote.Delete(mustRef(t, b, "team/app@"+d1), Auth); err != nil {
		t.Fatal(err)
	}
	eventuallyAt(t, "team/app:1", "", all...)
	eventuallyAt(t, "team/app@"+d1, "", all...)
	if got, _ := resolve(a2, "team/other:1"); got != "" {
		t.Errorf("team/other reached siteatwo, outside its scope")
	}

	// Status: every node Online with a last sync after the pushes.
	Eventually(t, replicationTimeout, func() error {
		for _, nm := range []string{"sitea", "siteb", "sitec", "siteatwo"} {
			v, ok := listNodes(t, root)[nm]
			if !ok || v.Status == nil {
				return fmt.Errorf("%s has no status", nm)
			}
			if v.Status.State != "Online" && v.Status.State != "Syncing" {
				return fmt.Errorf("%s is %s", nm, v.Status.State)
			}
			if !v.Status.LastSync.After(pushed) {
				return fmt.Errorf("%s last synced at %s, before the push at %s", nm, v.Status.LastSync, pushed)
			}
		}
		return nil
	})

	// Settings made at the root reach a node two levels down.
	root.MustCLI(t, "node", "update", "sitea", "--add-repository", "extra/*")
	root.MustCLI(t, "node", "update", "siteb", "--add-repository", "extra/*")
	root.MustCLI(t, "node", "update", "sitec", "--add-repository", "extra/*", "--log-level", "debug")
	Eventually(t, replicationTimeout, func() error {
		v := listNodes(t, root)["sitec"]
		if v.Status == nil || v.Status.LogLevel != "debug" || !slices.Contains(v.Status.Repositories, "extra/*") {
			return fmt.Errorf("sitec reports %+v, want log level debug and extra/*", v.Status)
		}
		return nil
	})
	de := push(t, root, "extra/tool:1", content.Image(t, 1))
	eventuallyAt(t, "extra/tool:1", de, a, b, c)
}

// TestSecondProcessForAnActiveNodeIsRefused: ALREADY_ACTIVATED until deactivated.
func TestSecondProcessForAnActiveNodeIsRefused(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	StartChild(t, root, Child{Name: "siteone", Mode: "ReadOnly", Repositories: []string{"app/*"}})
	cs := strings.TrimSpace(root.MustCLI(t, "node", "get-settings", "siteone", "--generate-password", "2"))
	out, err := RunEnv(t, time.Minute, []string{"OUTPOST_CONNECTION_STRING=" + cs}, Binary(t), "serve", "--data", t.TempDir(),
		"--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "ALREADY_ACTIVATED") {
		t.Fatalf("second process: %v, want a non-zero exit with ALREADY_ACTIVATED:\n%s", err, out)
	}
	if strings.Contains(out, strings.Split(strings.Split(cs, "SyncTokenPassword=")[1], ";")[0]) {
		t.Errorf("the sync token password appears in the output")
	}
	root.MustCLI(t, "node", "deactivate", "siteone")
	second := StartNode(t, NodeOptions{Name: "siteone", ConnectionString: cs})
	if second.Host == "" {
		t.Fatal("no second process after deactivate")
	}
}

// TestNodeRulesAreEnforcedWithClearMessages: each rule refused, nothing stored.
func TestNodeRulesAreEnforcedWithClearMessages(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	root.MustCLI(t, "node", "create", "plantro", "--mode", "ReadOnly", "--repository", "plant/*")
	root.MustCLI(t, "node", "create", "plantrw", "--mode", "ReadWrite", "--repository", "plant/*")
	root.MustCLI(t, "node", "create", "lineone", "--parent", "plantrw", "--repository", "plant/line1/*")
	before := len(listNodes(t, root))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "create", "abc", "--repository", "x"}, `name "abc": 5 to 50 letters and digits`},
		{[]string{"node", "create", "1site", "--repository", "x"}, "starting with a letter"},
		{[]string{"node", "create", "site-one", "--repository", "x"}, "letters and digits"},
		{[]string{"node", "create", "plantro", "--repository", "x"}, "already exists"},
		{[]string{"node", "create", "childrw", "--parent", "plantro", "--mode", "ReadWrite", "--repository", "plant/a"}, "parent plantro is ReadOnly"},
		{[]string{"node", "create", "childx", "--parent", "plantrw", "--repository", "other/*"}, "not within the scope of parent plantrw"},
		{[]string{"node", "create", "childy", "--parent", "nosuchnode", "--repository", "x"}, `parent "nosuchnode": no such node`},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-message-ttl", "PT12H"}, "P1D to P90D"},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-message-ttl", "P91D"}, "P1D to P90D"},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-schedule", "0 2 * * *"}, "sync window: required"},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-schedule", "0 2 * * *", "--sync-window", "PT30M"}, "PT1H to P7D"},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-schedule", "0 2 * * *", "--sync-window", "P8D"}, "PT1H to P7D"},
		{[]string{"node", "create", "childz", "--repository", "x", "--sync-schedule", "every night", "--sync-window", "PT2H"}, "5-field cron"},
		{[]string{"node", "create", "childz", "--repository", "x", "--mode", "Sideways"}, `mode "Sideways"`},
		{[]string{"node", "create", "childz", "--repository", "Bad/Name"}, "lowercase"},
		{[]string{"node", "create", "childz"}, "at least one repository"},
		{[]string{"node", "create", "childz", "--repository", "x", "--log-level", "loud"}, `log level "loud"`},
		{[]string{"node", "update", "plantrw", "--mode", "ReadOnly"}, "mode cannot change"},
		{[]string{"node", "update", "lineone", "--parent", "plantro"}, "parent cannot change"},
		{[]string{"node", "update", "plantrw", "--remove-repository", "plant/*"}, "at least one repository"},
		{[]string{"node", "update", "plantrw", "--add-repository", "x", "--remove-repository", "plant/*"}, "child lineone still syncs plant/line1/*"},
		{[]string{"node", "delete", "plantrw"}, "has children (lineone)"},
		{[]string{"node", "delete", "nosuchnode"}, "not found"},
		{[]string{"node", "get-settings", "lineone"}, "parent plantrw has not activated yet"},
	} {
		out, err := root.CLI(t, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v\n%s\nwant an error containing %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
	if after := len(listNodes(t, root)); after != before {
		t.Errorf("refused commands changed the tree: %d nodes, was %d", after, before)
	}
	out, err := Run(t, time.Minute, Binary(t), "node", "list", "--server", root.URL, "--token", "wrong")
	if err == nil || !strings.Contains(out, "admin token") {
		t.Errorf("node list with a wrong token: %v\n%s", err, out)
	}
}

func mustRef(t testing.TB, n *Node, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(n.Host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDigestRef(t *testing.T, n *Node, s string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(n.Host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestResyncRestoresALostStore: a site whose registry storage was lost (a replaced
// disk) gets its whole scope back from `node resync`, not from events long acked.
func TestResyncRestoresALostStore(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "sitered", Mode: "ReadOnly", Repositories: []string{"app/*"}})
	dx := push(t, root, "app/x:1", content.Image(t, 1))
	dy := push(t, root, "app/y:1", content.Image(t, 2))
	push(t, root, "other/z:1", content.Image(t, 1))
	eventuallyAt(t, "app/x:1", dx, site)
	eventuallyAt(t, "app/y:1", dy, site)

	site.Stop()
	if err := os.RemoveAll(filepath.Join(site.Data(), "registry")); err != nil {
		t.Fatal(err)
	}
	site.Start()
	if got, _ := resolve(site, "app/x:1"); got != "" {
		t.Fatalf("app/x:1 survived the lost store: %s", got)
	}
	root.MustCLI(t, "node", "resync", "sitered")
	eventuallyAt(t, "app/x:1", dx, site)
	eventuallyAt(t, "app/y:1", dy, site)
	if got, _ := resolve(site, "other/z:1"); got != "" {
		t.Errorf("resync copied other/z, outside the scope")
	}
}
