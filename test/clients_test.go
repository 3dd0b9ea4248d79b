package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/test/content"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// writeLayout writes a multi-layer image as an OCI layout that skopeo and crane push.
func writeLayout(t testing.TB, layers int) (dir, manifestDigest string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := content.OCIImage(t, layers)
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	return dir, content.Digest(t, img)
}

const clientTimeout = 2 * time.Minute

func TestSkopeoCraneAndOrasAgainstANode(t *testing.T) {
	skopeo, crane, oras := Tool(t, "skopeo"), Tool(t, "crane"), Tool(t, "oras")
	node := StartNode(t, NodeOptions{})
	src, want := writeLayout(t, 3)

	// skopeo pushes, crane and skopeo pull.
	MustRun(t, clientTimeout, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+node.Host+"/fleet/skopeo:v1")
	if got := strings.TrimSpace(MustRun(t, clientTimeout, crane, "digest", "--insecure", node.Host+"/fleet/skopeo:v1")); got != want {
		t.Errorf("skopeo push stored %s, want %s", got, want)
	}
	out := filepath.Join(t.TempDir(), "skopeo-pull")
	MustRun(t, clientTimeout, skopeo, "copy", "--src-tls-verify=false", "docker://"+node.Host+"/fleet/skopeo:v1", "oci:"+out+":v1")
	assertLayoutHolds(t, out, want, 3)

	// crane pushes, skopeo and crane pull.
	MustRun(t, clientTimeout, crane, "push", "--insecure", src, node.Host+"/fleet/crane:v1")
	inspect := MustRun(t, clientTimeout, skopeo, "inspect", "--tls-verify=false", "docker://"+node.Host+"/fleet/crane:v1")
	var info struct {
		Digest string
		Layers []string
	}
	if err := json.Unmarshal([]byte(inspect), &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, inspect)
	}
	if info.Digest != want || len(info.Layers) != 3 {
		t.Errorf("skopeo inspect of crane's push: digest %s with %d layers, want %s with 3", info.Digest, len(info.Layers), want)
	}
	out = filepath.Join(t.TempDir(), "crane-pull")
	MustRun(t, clientTimeout, crane, "pull", "--insecure", "--format", "oci", node.Host+"/fleet/crane:v1", out)
	assertLayoutHolds(t, out, want, 3)

	// oras attaches an artifact and discovers it through the referrers API.
	sbom := filepath.Join(t.TempDir(), "sbom.json")
	if err := os.WriteFile(sbom, []byte(`{"spdxVersion":"SPDX-2.3"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const artifactType = "application/vnd.example.sbom.v1+json"
	attach := MustRun(t, clientTimeout, oras, "attach", "--plain-http", "--disable-path-validation", "--artifact-type", artifactType,
		node.Host+"/fleet/crane:v1", sbom+":application/json", "--format", "json")
	var attached struct{ Digest string }
	if err := json.Unmarshal([]byte(attach), &attached); err != nil || attached.Digest == "" {
		t.Fatalf("oras attach printed %q: %v", attach, err)
	}
	discover := MustRun(t, clientTimeout, oras, "discover", "--plain-http", "--format", "json", node.Host+"/fleet/crane:v1")
	var found struct {
		Referrers []struct {
			Digest       string
			ArtifactType string
		}
	}
	if err := json.Unmarshal([]byte(discover), &found); err != nil {
		t.Fatalf("oras discover: %v\n%s", err, discover)
	}
	if len(found.Referrers) != 1 || found.Referrers[0].Digest != attached.Digest || found.Referrers[0].ArtifactType != artifactType {
		t.Errorf("oras discover found %+v, want %s of type %s", found.Referrers, attached.Digest, artifactType)
	}
	// Clients fall back to a sha256-<hex> tag when a registry has no referrers API.
	tags := MustRun(t, clientTimeout, crane, "ls", "--insecure", node.Host+"/fleet/crane")
	if strings.Contains(tags, "sha256-") {
		t.Errorf("oras used the tag fallback, not the referrers API: tags %q", tags)
	}
	req, err := http.NewRequest(http.MethodGet, node.URL+"/v2/fleet/crane/referrers/"+want, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(Authorize(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx struct{ Manifests []struct{ Digest string } }
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != attached.Digest {
		t.Errorf("referrers API: %+v, %v", idx, err)
	}
}

// assertLayoutHolds checks that an OCI layout holds the image with that digest and
// its layers' bytes.
func assertLayoutHolds(t testing.TB, dir, want string, layers int) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("pulled layout index: %+v, %v", m, err)
	}
	img, err := p.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := content.Digest(t, img); got != want {
		t.Errorf("pulled %s, want %s", got, want)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != layers {
		t.Fatalf("pulled %d layers (%v), want %d", len(ls), err, layers)
	}
	for _, l := range ls {
		d, _ := l.Digest()
		if _, err := os.Stat(filepath.Join(dir, "blobs", d.Algorithm, d.Hex)); err != nil {
			t.Errorf("layer %s not pulled: %v", d, err)
		}
	}
}

func TestReadOnlyNodeRefusesSkopeoAndCranePushes(t *testing.T) {
	skopeo, crane := Tool(t, "skopeo"), Tool(t, "crane")
	data := t.TempDir()
	src, want := writeLayout(t, 2)
	rw := StartNode(t, NodeOptions{Data: data})
	MustRun(t, clientTimeout, crane, "push", "--insecure", src, rw.Host+"/store/pos:v1")
	rw.Stop()
	ro := StartNode(t, NodeOptions{Data: data, Mode: "ReadOnly", Name: "storeone"})

	for _, push := range [][]string{
		{skopeo, "copy", "--dest-tls-verify=false", "oci:" + src + ":v1", "docker://" + ro.Host + "/store/pos:v2"},
		{crane, "push", "--insecure", src, ro.Host + "/store/pos:v2"},
		{crane, "delete", "--insecure", ro.Host + "/store/pos@" + want},
	} {
		out, err := Run(t, clientTimeout, push[0], push[1:]...)
		if err == nil {
			t.Errorf("%s %s succeeded on a read-only node", filepath.Base(push[0]), push[1])
			continue
		}
		if !strings.Contains(out, "read-only") {
			t.Errorf("%s %s failed without saying read-only:\n%s", filepath.Base(push[0]), push[1], out)
		}
	}
	if got := strings.TrimSpace(MustRun(t, clientTimeout, crane, "digest", "--insecure", ro.Host+"/store/pos:v1")); got != want {
		t.Errorf("crane pull from read-only node: %s, want %s", got, want)
	}
	out := filepath.Join(t.TempDir(), "pull")
	MustRun(t, clientTimeout, skopeo, "copy", "--src-tls-verify=false", "docker://"+ro.Host+"/store/pos:v1", "oci:"+out+":v1")
	assertLayoutHolds(t, out, want, 2)
	if tags := MustRun(t, clientTimeout, crane, "ls", "--insecure", ro.Host+"/store/pos"); strings.Contains(tags, "v2") {
		t.Errorf("a refused push left a tag: %q", tags)
	}
}
