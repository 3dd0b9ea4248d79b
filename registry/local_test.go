package registry

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// TestLocalBlobsAreCheckedLinkedAndServed: blobs written in process are checked
// against their digest before anything is stored, served by the API like uploaded
// ones, linked into another repository without a second write, and carry a manifest
// pushed afterwards on its own.
func TestLocalBlobsAreCheckedLinkedAndServed(t *testing.T) {
	ctx := context.Background()
	tr := startRegistry(t, ReadWrite)
	img := content.Image(t, 1)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(layer)

	for _, c := range []struct {
		what, repo, digest string
		data               []byte
		want               string
	}{
		{"content of another blob", "team/a", ld.String(), config, "does not match"},
		{"a bad repository name", "Team//a", ld.String(), layer, "not a valid name"},
		{"a sha512 digest", "team/a", "sha512:" + hex.EncodeToString(sum[:]), layer, "only sha256"},
		{"no digest", "team/a", "layer", layer, "blob \"layer\""},
	} {
		err := tr.PutBlob(ctx, c.repo, c.digest, c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("put %s: %v, want an error saying %q", c.what, err, c.want)
		}
	}
	if resp := tr.do(t, http.MethodHead, "/v2/team/a/blobs/"+ld.String(), "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after refused puts the blob is %s, want 404", resp.Status)
	}
	if held, err := tr.LinkBlob(ctx, "team/a", ld.String()); err != nil || held {
		t.Fatalf("link of a blob held nowhere: %v %v, want false", held, err)
	}

	if err := tr.PutBlob(ctx, "team/a", ld.String(), layer); err != nil {
		t.Fatal(err)
	}
	if err := tr.PutBlob(ctx, "team/a", cd.String(), config); err != nil {
		t.Fatal(err)
	}
	resp := tr.do(t, http.MethodGet, "/v2/team/a/blobs/"+ld.String(), "", nil)
	if got, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(got) != string(layer) {
		t.Fatalf("GET the put blob: %s, %d bytes, want 200 and %d bytes", resp.Status, len(got), len(layer))
	}
	// Only the manifest goes over the API: distribution finds its blobs linked.
	if err := remote.Put(tr.ref(t, "team/a:1"), img); err != nil {
		t.Fatalf("manifest after in-process blobs: %v", err)
	}
	if _, err := remote.Image(tr.ref(t, "team/a:1")); err != nil {
		t.Fatal(err)
	}

	// Held in team/a: linked into team/b, no bytes given.
	for _, d := range []string{ld.String(), cd.String()} {
		if held, err := tr.LinkBlob(ctx, "team/b", d); err != nil || !held {
			t.Fatalf("link %s into team/b: %v %v, want true", d, held, err)
		}
	}
	if err := remote.Put(tr.ref(t, "team/b:1"), img); err != nil {
		t.Fatalf("manifest after linked blobs: %v", err)
	}
	// Nothing is left aside once the blobs are in place.
	if left, err := tr.driver.List(ctx, incomingRoot); err == nil && len(left) > 0 {
		t.Errorf("left in %s: %v", incomingRoot, left)
	}
}
