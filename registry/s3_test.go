package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/registry/s3test"
	"github.com/outpost-edge/outpost/test/content"
)

// The registry on S3 storage: a real SeaweedFS (registry/s3test), one bucket per test.

// s3Storage points a registry at bucket b.
func s3Storage(b s3test.Bucket) func(*Config) {
	return func(c *Config) {
		c.Storage = StorageConfig{Driver: StorageS3, S3: S3Config{
			Bucket: b.Name, Endpoint: b.Endpoint, PathStyle: true, AccessKey: b.AccessKey, SecretKey: b.SecretKey,
		}}
	}
}

// startS3Registry starts a registry whose content is in a fresh bucket.
func startS3Registry(t *testing.T, mode Mode) (*testRegistry, s3test.Bucket) {
	t.Helper()
	b := s3test.NewBucket(t)
	return startRegistryIn(t, t.TempDir(), mode, s3Storage(b)), b
}

// s3Key is the bucket key of a storage driver path (no root directory).
func s3Key(p string) string { return strings.TrimPrefix(p, "/") }

func TestS3ReferrersIndexLivesInTheBucket(t *testing.T) {
	b := s3test.NewBucket(t)
	checkReferrersAPI(t, func(dir string) *testRegistry { return startRegistryIn(t, dir, ReadWrite, s3Storage(b)) })
	if keys := b.Keys(t, s3Key(referrersRoot)); len(keys) == 0 {
		t.Errorf("no key under %s in the bucket: the referrers index is not kept beside the content", referrersRoot)
	}
}

func TestS3SHA512Manifest(t *testing.T) {
	tr, b := startS3Registry(t, ReadWrite)
	checkSHA512Manifest(t, tr)
	// The alias link was written, and deleted with the manifest, in the bucket.
	if keys := b.Keys(t, s3Key(path.Join(repositoriesRoot, "app/_manifests/revisions/sha512"))); len(keys) != 0 {
		t.Errorf("sha512 alias links left after the delete: %v", keys)
	}
}

// TestUnknownRepositoryTagListIs404: on both storages, the tag list of a repository
// never written is 404 NAME_UNKNOWN (distribution on S3 answers 200 with no tags),
// and a repository's own is listed.
func TestUnknownRepositoryTagListIs404(t *testing.T) {
	for _, c := range []struct {
		name  string
		start func(t *testing.T) *testRegistry
	}{
		{"filesystem", func(t *testing.T) *testRegistry { return startRegistry(t, ReadWrite) }},
		{"s3", func(t *testing.T) *testRegistry { tr, _ := startS3Registry(t, ReadWrite); return tr }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := c.start(t)
			if err := remote.Write(tr.ref(t, "team/app:1.0"), content.Image(t, 1)); err != nil {
				t.Fatal(err)
			}
			for _, repo := range []string{"nothing", "team", "team/app/sub", "team/ap"} {
				resp := tr.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", "", nil)
				if msg := ociMessage(resp); resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(msg, "NAME_UNKNOWN") {
					t.Errorf("tags of %s, never written: %s %s, want 404 NAME_UNKNOWN", repo, resp.Status, msg)
				}
			}
			resp := tr.do(t, http.MethodGet, "/v2/team/app/tags/list", "", nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tags":["1.0"]`) {
				t.Errorf("tags of team/app: %s %s, want 200 with 1.0", resp.Status, body)
			}
		})
	}
}

// TestS3WriteBlobCommitsOnlyWholeCheckedBlobs: on S3 a blob written in process
// (a downstream copy's) is one multipart upload to its own key, committed only
// when all of it arrived and matched its digest. A flipped byte or a broken link
// leaves no object and no multipart upload behind; the next write starts from 0
// and succeeds; the blob serves, carries a manifest and links into another
// repository without its bytes. The blob is larger than one part (10 MiB).
func TestS3WriteBlobCommitsOnlyWholeCheckedBlobs(t *testing.T) {
	ctx := context.Background()
	tr, b := startS3Registry(t, ReadWrite)
	data := make([]byte, 12<<20+5)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(data)
	size := int64(len(data))
	blobKey := s3Key(blobDataPath(d))

	flipped := bytes.Clone(data)
	flipped[len(flipped)-3] ^= 1
	if err := tr.WriteBlob(ctx, "team/a", d.String(), size, (&source{data: flipped}).open); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("write of a flipped byte: %v, want a digest mismatch", err)
	}
	src := &source{data: data, cutAt: 11 << 20} // after the first part went up
	if err := tr.WriteBlob(ctx, "team/a", d.String(), size, src.open); err == nil || !strings.Contains(err.Error(), "link cut") {
		t.Fatalf("write over a link that breaks: %v, want the break", err)
	}
	if keys := b.Keys(t, blobKey); len(keys) != 0 {
		t.Fatalf("after refused and broken writes the bucket holds %v", keys)
	}
	if n := b.PendingUploads(t); n != 0 {
		t.Fatalf("%d multipart uploads left behind by refused and broken writes", n)
	}
	if resp := tr.do(t, http.MethodHead, "/v2/team/a/blobs/"+d.String(), "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after refused writes the blob is %s, want 404", resp.Status)
	}

	src.cutAt = 0
	if err := tr.WriteBlob(ctx, "team/a", d.String(), size, src.open); err != nil {
		t.Fatalf("write after the break: %v", err)
	}
	if !slices.Equal(src.offsets, []int64{0, 0}) {
		t.Errorf("source read from offsets %v, want [0 0]: S3 parts cannot be read back to resume", src.offsets)
	}
	if keys := b.Keys(t, blobKey); len(keys) != 1 {
		t.Errorf("blob keys after the write: %v, want %s", keys, blobKey)
	}
	if keys := b.Keys(t, s3Key(incomingRoot)); len(keys) != 0 {
		t.Errorf("left aside: %v", keys)
	}
	if n := b.PendingUploads(t); n != 0 {
		t.Errorf("%d multipart uploads pending after a committed write", n)
	}
	resp := tr.do(t, http.MethodGet, "/v2/team/a/blobs/"+d.String(), "", nil)
	if got, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET the written blob: %s, %d bytes, want 200 and the %d bytes written", resp.Status, len(got), len(data))
	}
	never := func(context.Context, int64) (io.ReadCloser, error) {
		t.Error("source read for a blob the node holds")
		return nil, io.EOF
	}
	if err := tr.WriteBlob(ctx, "team/b", d.String(), size, never); err != nil {
		t.Fatalf("link into team/b: %v", err)
	}
	if resp := tr.do(t, http.MethodHead, "/v2/team/b/blobs/"+d.String(), "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD the linked blob in team/b: %s", resp.Status)
	}

	// An image whose blobs were all written in process takes its manifest over the API.
	img := content.Image(t, 1)
	layers, _ := img.Layers()
	ld, layer := blobOf(t, layers[0])
	config, _ := img.RawConfigFile()
	cd, _ := img.ConfigName()
	for _, x := range []struct {
		d    string
		data []byte
	}{{ld, layer}, {cd.String(), config}} {
		if err := tr.WriteBlob(ctx, "team/c", x.d, int64(len(x.data)), (&source{data: x.data}).open); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.Put(tr.ref(t, "team/c:1"), img); err != nil {
		t.Fatalf("manifest after in-process blobs: %v", err)
	}
}

// TestS3ScrubQuarantinesAndAPushHeals: a blob overwritten with other bytes and a
// blob deleted, behind the node's back in the bucket, are found by a scrub, set
// aside under the quarantine prefix (in the bucket), answered 404 saying why,
// still reported by a registry started again on the bucket, and forgotten once a
// client pushes the blob again.
func TestS3ScrubQuarantinesAndAPushHeals(t *testing.T) {
	ctx := context.Background()
	b := s3test.NewBucket(t)
	dir := t.TempDir()
	tr := startRegistryIn(t, dir, ReadWrite, s3Storage(b))
	img := content.Image(t, 2)
	if err := remote.Write(tr.ref(t, "shop/web:1"), img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	damaged, layer := blobOf(t, layers[0])
	deleted, _ := blobOf(t, layers[1])
	other := bytes.Clone(layer)
	other[0] ^= 1
	b.Put(t, s3Key(blobDataPath(digest.Digest(damaged))), other)
	if err := tr.driver.Delete(ctx, blobDataPath(digest.Digest(deleted))); err != nil {
		t.Fatal(err)
	}

	rep, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{damaged, deleted}
	slices.Sort(want)
	if got := corruptDigests(rep); !slices.Equal(got, want) {
		t.Fatalf("scrub found %v, want exactly %v", got, want)
	}
	for _, d := range want {
		hexd := strings.TrimPrefix(d, "sha256:")
		if keys := b.Keys(t, s3Key(path.Join(quarantineRoot, hexd))); len(keys) != 1 {
			t.Errorf("quarantine of %s in the bucket: %v, want one key", d, keys)
		}
		resp := tr.do(t, http.MethodGet, "/v2/shop/web/blobs/"+d, "", nil)
		if msg := ociMessage(resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(msg, "found corrupt") {
			t.Errorf("GET quarantined %s: %s %s, want 404 saying it was found corrupt", d, resp.Status, msg)
		}
	}

	tr.stop()
	tr = startRegistryIn(t, dir, ReadWrite, s3Storage(b))
	if got := len(tr.Quarantined()); got != 2 {
		t.Fatalf("a registry started again on the bucket reports %d quarantined blobs, want 2", got)
	}
	if err := remote.WriteLayer(tr.ref(t, "shop/web").Context(), layers[0]); err != nil {
		t.Fatal(err)
	}
	resp := tr.do(t, http.MethodGet, "/v2/shop/web/blobs/"+damaged, "", nil)
	if got, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !bytes.Equal(got, layer) {
		t.Fatalf("GET after the push: %s, %d bytes, want 200 and the layer", resp.Status, len(got))
	}
	if keys := b.Keys(t, s3Key(path.Join(quarantineRoot, strings.TrimPrefix(damaged, "sha256:")))); len(keys) != 0 {
		t.Errorf("quarantined bytes kept after the blob was pushed again: %v", keys)
	}
}

// TestS3StartSaysWhyStorageIsUnusable: a registry on a bucket that does not
// exist, with keys the server refuses, or on an endpoint that never answers, is
// refused at start with the reason, the last one within its check timeout; the
// secret is in no message.
func TestS3StartSaysWhyStorageIsUnusable(t *testing.T) {
	b := s3test.NewBucket(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() { // accepts and never answers
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, c := range []struct {
		what   string
		change func(*Config)
		want   string
	}{
		{"a bucket that does not exist", func(c *Config) { c.Storage.S3.Bucket = "nosuchbucket" }, "NoSuchBucket"},
		{"a refused secret", func(c *Config) { c.Storage.S3.SecretKey = "wrong-secret-0123" }, "SignatureDoesNotMatch"},
		{"an endpoint that never answers", func(c *Config) {
			c.Storage.S3.Endpoint = "http://" + silent.Addr().String()
			c.Storage.CheckTimeout = 300 * time.Millisecond
		}, "no answer within 300ms"},
	} {
		cfg := Config{Dir: t.TempDir(), Node: "testnode", Publisher: nopPublisher{}}
		s3Storage(b)(&cfg)
		c.change(&cfg)
		start := time.Now()
		_, err := New(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "registry: storage s3://") {
			t.Errorf("%s: %v, want an error naming the storage and saying %q", c.what, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), cfg.Storage.S3.SecretKey)) {
			t.Errorf("%s: the error shows the secret: %v", c.what, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: refused after %s", c.what, took)
		}
	}
}

// nopPublisher records nothing: for registries refused before they publish.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, *events.Event) error { return nil }

// TestS3RootDirectoryKeepsEverythingUnderItsPrefix: with a root directory, content
// and what Outpost keeps beside it (here the referrers index) are all under that
// key prefix, so several registries can share a bucket.
func TestS3RootDirectoryKeepsEverythingUnderItsPrefix(t *testing.T) {
	b := s3test.NewBucket(t)
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, s3Storage(b), func(c *Config) { c.Storage.S3.RootDirectory = "/tier1" })
	img := content.Image(t, 1)
	if err := remote.Write(tr.ref(t, "app:1"), img); err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(tr.ref(t, "app:1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tr.ref(t, "app:sbom"), content.Artifact(t, "application/spdx+json", desc)); err != nil {
		t.Fatal(err)
	}
	all := b.Keys(t, "")
	for _, k := range all {
		if !strings.HasPrefix(k, "tier1/") {
			t.Errorf("key %s outside the root directory tier1/", k)
		}
	}
	if !slices.ContainsFunc(all, func(k string) bool { return strings.HasPrefix(k, "tier1/outpost/v1/referrers/app/") }) {
		t.Errorf("no referrers index under tier1/: %v", all)
	}
	if resp := tr.do(t, http.MethodGet, "/v2/other/tags/list", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("tags of a repository never written: %s, want 404", resp.Status)
	}
}

// TestS3TwoMembersWriteOneBlobAtOnce: two registries on one bucket (two root
// members) write the same blob in process at the same moment, each into its own
// repository: nothing joins them (their claims are per process), and both end
// whole: each commits the same checked bytes to the blob's key.
func TestS3TwoMembersWriteOneBlobAtOnce(t *testing.T) {
	ctx := context.Background()
	b := s3test.NewBucket(t)
	one := startRegistryIn(t, t.TempDir(), ReadWrite, s3Storage(b))
	two := startRegistryIn(t, t.TempDir(), ReadWrite, s3Storage(b))
	data := make([]byte, 11<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(data)
	start := make(chan struct{})
	errs := make(chan error, 2)
	for i, tr := range []*testRegistry{one, two} {
		go func() {
			<-start
			errs <- tr.WriteBlob(ctx, fmt.Sprintf("team/m%d", i), d.String(), int64(len(data)), (&source{data: data}).open)
		}()
	}
	close(start)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a member's write: %v", err)
		}
	}
	for i, tr := range []*testRegistry{one, two} {
		for j := range 2 {
			resp := tr.do(t, http.MethodGet, fmt.Sprintf("/v2/team/m%d/blobs/%s", j, d), "", nil)
			if got, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
				t.Errorf("member %d, team/m%d: %s, %d bytes, want 200 and the blob", i, j, resp.Status, len(got))
			}
		}
	}
	if n := b.PendingUploads(t); n != 0 {
		t.Errorf("%d multipart uploads left pending", n)
	}
}
