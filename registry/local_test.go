package registry

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// source serves a blob's bytes from an offset on, as a parent's registry would,
// and remembers the offsets it was asked for.
type source struct {
	data    []byte
	cutAt   int64 // >0: the read breaks off after this many bytes of the blob
	offsets []int64
}

func (s *source) open(_ context.Context, offset int64) (io.ReadCloser, error) {
	s.offsets = append(s.offsets, offset)
	rest := s.data[offset:]
	if s.cutAt > offset {
		rest = s.data[offset:s.cutAt]
		return io.NopCloser(io.MultiReader(bytes.NewReader(rest), errReader{})), nil
	}
	return io.NopCloser(bytes.NewReader(rest)), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("link cut") }

func blobOf(t *testing.T, l v1.Layer) (string, []byte) {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), b
}

// TestWriteBlobChecksResumesLinksAndServes: a blob written in process is checked
// against its digest before it is stored, goes on from where a broken write stopped,
// is linked into another repository without its bytes, is served by the API like an
// uploaded one, and carries a manifest pushed afterwards on its own.
func TestWriteBlobChecksResumesLinksAndServes(t *testing.T) {
	ctx := context.Background()
	tr := startRegistry(t, ReadWrite)
	img := content.Image(t, 1)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, layer := blobOf(t, layers[0])
	config, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(layer)
	flipped[len(flipped)/2] ^= 1
	sum := sha512.Sum512(layer)
	size := int64(len(layer))

	for _, c := range []struct {
		what, repo, digest string
		data               []byte
		want               string
	}{
		{"a flipped byte", "team/a", ld, flipped, "does not match"},
		{"a bad repository name", "Team//a", ld, layer, "not a valid name"},
		{"a sha512 digest", "team/a", "sha512:" + hex.EncodeToString(sum[:]), layer, "only sha256"},
		{"no digest", "team/a", "layer", layer, `blob "layer"`},
	} {
		src := &source{data: c.data}
		err := tr.WriteBlob(ctx, c.repo, c.digest, size, src.open)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("write %s: %v, want an error saying %q", c.what, err, c.want)
		}
	}
	if resp := tr.do(t, http.MethodHead, "/v2/team/a/blobs/"+ld, "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after refused writes the blob is %s, want 404", resp.Status)
	}

	// The link breaks after a third: the next write asks for the rest only.
	src := &source{data: layer, cutAt: size / 3}
	if err := tr.WriteBlob(ctx, "team/a", ld, size, src.open); err == nil || !strings.Contains(err.Error(), "link cut") {
		t.Fatalf("write over a link that breaks: %v, want the break", err)
	}
	src.cutAt = 0
	if err := tr.WriteBlob(ctx, "team/a", ld, size, src.open); err != nil {
		t.Fatalf("write after the break: %v", err)
	}
	if len(src.offsets) != 2 || src.offsets[1] != size/3 {
		t.Errorf("source read from offsets %v, want [0 %d]", src.offsets, size/3)
	}
	if err := tr.WriteBlob(ctx, "team/a", cd.String(), int64(len(config)), (&source{data: config}).open); err != nil {
		t.Fatal(err)
	}
	resp := tr.do(t, http.MethodGet, "/v2/team/a/blobs/"+ld, "", nil)
	if got, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !bytes.Equal(got, layer) {
		t.Fatalf("GET the written blob: %s, %d bytes, want 200 and the %d bytes written", resp.Status, len(got), len(layer))
	}
	// Only the manifest goes over the API: distribution finds its blobs linked.
	if err := remote.Put(tr.ref(t, "team/a:1"), img); err != nil {
		t.Fatalf("manifest after in-process blobs: %v", err)
	}
	if _, err := remote.Image(tr.ref(t, "team/a:1")); err != nil {
		t.Fatal(err)
	}

	// Held in team/a: linked into team/b without reading the source.
	for _, d := range []string{ld, cd.String()} {
		never := func(context.Context, int64) (io.ReadCloser, error) {
			t.Errorf("source read for %s, which the node holds", d)
			return nil, errors.New("not here")
		}
		if err := tr.WriteBlob(ctx, "team/b", d, size, never); err != nil {
			t.Fatalf("link %s into team/b: %v", d, err)
		}
	}
	if err := remote.Put(tr.ref(t, "team/b:1"), img); err != nil {
		t.Fatalf("manifest after linked blobs: %v", err)
	}
	// Nothing is left aside once the blobs are in place.
	if left, err := tr.driver.List(ctx, incomingRoot); err == nil && len(left) > 0 {
		t.Errorf("left in %s: %v", incomingRoot, left)
	}

	// Two writes of one blob at once, into two repositories: the second waits for
	// the first and then only links it, never reading the source.
	next, err := content.Image(t, 1).Layers()
	if err != nil {
		t.Fatal(err)
	}
	nd, ndata := blobOf(t, next[0])
	opened, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- tr.WriteBlob(ctx, "team/d", nd, int64(len(ndata)), func(context.Context, int64) (io.ReadCloser, error) {
			close(opened)
			<-release
			return io.NopCloser(bytes.NewReader(ndata)), nil
		})
	}()
	<-opened
	second := make(chan error, 1)
	go func() {
		second <- tr.WriteBlob(ctx, "team/e", nd, int64(len(ndata)), func(context.Context, int64) (io.ReadCloser, error) {
			return nil, errors.New("the source was read twice")
		})
	}()
	time.Sleep(50 * time.Millisecond) // the second is waiting by now
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first of two writes at once: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second of two writes at once: %v", err)
	}

	// A part whose write never goes on is dropped at a start a week later, not before.
	other, err := content.Image(t, 1).Layers()
	if err != nil {
		t.Fatal(err)
	}
	od, odata := blobOf(t, other[0])
	cut := &source{data: odata, cutAt: int64(len(odata)) / 2}
	if err := tr.WriteBlob(ctx, "team/c", od, int64(len(odata)), cut.open); err == nil {
		t.Fatal("write over a link that breaks: no error")
	}
	for _, c := range []struct {
		later time.Duration
		parts int
	}{{24 * time.Hour, 1}, {8 * 24 * time.Hour, 0}} {
		tr.cfg.Now = func() time.Time { return time.Now().Add(c.later) }
		if err := tr.dropStaleIncoming(ctx); err != nil {
			t.Fatal(err)
		}
		if left, _ := tr.driver.List(ctx, incomingRoot); len(left) != c.parts {
			t.Errorf("%s later: %d parts aside, want %d", c.later, len(left), c.parts)
		}
	}
}
