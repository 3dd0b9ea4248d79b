package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/test/content"
)

// blobFile is where the filesystem driver keeps a blob's bytes on disk.
func (tr *testRegistry) blobFile(d string) string {
	hexd := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(tr.dir, "registry/docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
}

// layerDigests pushes count one-layer images to repo and returns their layer digests.
func pushLayers(t *testing.T, tr *testRegistry, repo string, count int) []string {
	t.Helper()
	var out []string
	for i := range count {
		img := content.Image(t, 1)
		if err := remote.Write(tr.ref(t, fmt.Sprintf("%s:%d", repo, i)), img, remote.WithContext(context.Background())); err != nil {
			t.Fatal(err)
		}
		out = append(out, mustLayerDigest(t, img))
	}
	return out
}

func corruptDigests(rep *ScrubReport) []string {
	var out []string
	for _, c := range rep.Corrupt {
		out = append(out, c.Digest.String())
	}
	return out
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestScrubFindsExactlyTheDamagedBlobs: a byte flipped in one blob file, another
// truncated, a third deleted; the scrub reports exactly those three, counts them,
// sets them aside so that the API answers a clear 404 instead of bad bytes, reports
// them again (without counting twice) while they stay bad, and forgets one a client
// pushes again.
func TestScrubFindsExactlyTheDamagedBlobs(t *testing.T) {
	ctx := context.Background()
	tr := startRegistry(t, ReadWrite)
	layers := append(pushLayers(t, tr, "shop/web", 4), pushLayers(t, tr, "shop/api", 2)...)
	flipped, truncated, deleted := layers[0], layers[3], layers[5]

	clean, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 6 layers, 6 configs, 6 manifests.
	if len(clean.Corrupt) != 0 || clean.Blobs != 18 || clean.Bytes == 0 {
		t.Fatalf("clean store: %d corrupt, %d blobs, %d bytes; want 0, 18, >0", len(clean.Corrupt), clean.Blobs, clean.Bytes)
	}

	f, err := os.OpenFile(tr.blobFile(flipped), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(tr.blobFile(truncated), 10); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tr.blobFile(deleted)); err != nil {
		t.Fatal(err)
	}

	rep, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{flipped, truncated, deleted}
	slices.Sort(want)
	if got := corruptDigests(rep); !slices.Equal(got, want) {
		t.Fatalf("scrub found %v, want exactly %v", got, want)
	}
	if rep.Blobs != 17 {
		t.Errorf("hashed %d blobs, want 17 (18 stored, one deleted)", rep.Blobs)
	}
	for _, c := range rep.Corrupt {
		wantRepo := "shop/web"
		if c.Digest.String() == deleted {
			wantRepo = "shop/api"
		}
		if !slices.Equal(c.Repositories, []string{wantRepo}) || c.Healed || !strings.Contains(c.Error, "no parent") {
			t.Errorf("%s: repositories %v healed %v error %q; want [%s], not healed, no parent", c.Digest, c.Repositories, c.Healed, c.Error, wantRepo)
		}
		problem := map[string]string{flipped: "does not match", truncated: "does not match", deleted: "missing"}[c.Digest.String()]
		if !strings.Contains(c.Problem, problem) {
			t.Errorf("%s: problem %q, want it to say %q", c.Digest, c.Problem, problem)
		}
	}
	m := tr.scrub.metrics
	if got := testutil.ToFloat64(m.corrupt); got != 3 {
		t.Errorf("outpost_scrub_corrupt_blobs_total %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.blobs); got != 18+17 {
		t.Errorf("outpost_scrub_blobs_checked_total %v, want 35", got)
	}
	if got := testutil.ToFloat64(m.bytes); got != float64(clean.Bytes+rep.Bytes) {
		t.Errorf("outpost_scrub_bytes_checked_total %v, want %d", got, clean.Bytes+rep.Bytes)
	}
	if got := testutil.ToFloat64(m.quarantined); got != 3 {
		t.Errorf("outpost_scrub_quarantined_blobs %v, want 3", got)
	}
	if testutil.ToFloat64(m.lastRun) < float64(rep.Started.Unix()) {
		t.Errorf("outpost_scrub_last_run_timestamp_seconds %v, before the run started", testutil.ToFloat64(m.lastRun))
	}

	// Not served as good: a 404 that says why, for GET and HEAD, on every repository.
	for _, d := range []string{flipped, truncated} {
		resp := tr.do(t, http.MethodGet, "/v2/shop/web/blobs/"+d, "", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") || !strings.Contains(string(body), "found corrupt") {
			t.Errorf("GET %s: %d %s; want 404 BLOB_UNKNOWN saying it was found corrupt", d, resp.StatusCode, body)
		}
		if resp := tr.do(t, http.MethodHead, "/v2/shop/web/blobs/"+d, "", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD %s: %d, want 404", d, resp.StatusCode)
		}
	}
	if len(tr.Quarantined()) != 3 || tr.LastScrub() != rep {
		t.Errorf("quarantined %d, want 3; last scrub %p, want %p", len(tr.Quarantined()), tr.LastScrub(), rep)
	}

	// Still bad: reported again, not counted again.
	again, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := corruptDigests(again); !slices.Equal(got, want) || testutil.ToFloat64(m.corrupt) != 3 {
		t.Errorf("second scrub: %v (counter %v); want %v again, counter still 3", got, testutil.ToFloat64(m.corrupt), want)
	}

	// A restart goes on reporting (and refusing) them.
	tr2, err := New(ctx, Config{Dir: tr.dir + "/registry", Node: "testnode", Publisher: tr.Log})
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if got := len(tr2.Quarantined()); got != 3 {
		t.Errorf("after restart %d quarantined, want 3", got)
	}
}

// httpSource reads good copies from another registry over HTTP: the parent.
type httpSource struct {
	base  string
	reads int
}

func (s *httpSource) OpenBlob(ctx context.Context, repo string, d digest.Digest, manifest bool) (io.ReadCloser, int64, error) {
	s.reads++
	kind := "blobs"
	if manifest {
		kind = "manifests"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v2/"+repo+"/"+kind+"/"+d.String(), nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%s", resp.Status)
	}
	return resp.Body, resp.ContentLength, nil
}

// TestScrubHealsFromTheSourceInPlace: at a node with a parent, a corrupt layer and a
// corrupt manifest are fetched again and written in place, so that both repositories
// linking the layer serve it again; a scrub limited to one repository checks only
// what that repository links.
func TestScrubHealsFromTheSourceInPlace(t *testing.T) {
	ctx := context.Background()
	parent, child := startRegistry(t, ReadWrite), startRegistry(t, ReadWrite)
	img := content.Image(t, 2)
	other := content.Image(t, 1)
	for _, tr := range []*testRegistry{parent, child} {
		for _, ref := range []string{"shop/web:1", "shop/copy:1"} {
			if err := remote.Write(tr.ref(t, ref), img); err != nil {
				t.Fatal(err)
			}
		}
		if err := remote.Write(tr.ref(t, "shop/other:1"), other); err != nil {
			t.Fatal(err)
		}
	}
	layer := mustLayerDigest(t, img)
	manifest := content.Digest(t, img)
	good := sha256File(t, child.blobFile(layer))
	for _, d := range []string{layer, manifest} {
		if err := os.WriteFile(child.blobFile(d), []byte("not what it was"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Limited to shop/other: neither is seen.
	scoped, err := child.Scrub(ctx, ScrubOptions{Repositories: []string{"shop/other"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(scoped.Corrupt) != 0 || scoped.Blobs != 3 {
		t.Fatalf("scrub of shop/other: %v corrupt, %d blobs; want none, 3 (its layer, config, manifest)", corruptDigests(scoped), scoped.Blobs)
	}

	src := &httpSource{base: parent.URL}
	rep, err := child.Scrub(ctx, ScrubOptions{Repositories: []string{"shop/web"}, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{layer, manifest}
	slices.Sort(want)
	if got := corruptDigests(rep); !slices.Equal(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	for _, c := range rep.Corrupt {
		if !c.Healed || c.Error != "" {
			t.Errorf("%s: healed %v, error %q", c.Digest, c.Healed, c.Error)
		}
		if c.Manifest != (c.Digest.String() == manifest) {
			t.Errorf("%s: manifest %v", c.Digest, c.Manifest)
		}
	}
	if got := sha256File(t, child.blobFile(layer)); got != good || got != layer {
		t.Errorf("layer file hashes to %s after healing, want %s", got, layer)
	}
	if got := sha256File(t, child.blobFile(manifest)); got != manifest {
		t.Errorf("manifest file hashes to %s after healing, want %s", got, manifest)
	}
	// Both repositories serve the healed content (the pull verifies every digest).
	for _, repo := range []string{"shop/web", "shop/copy"} {
		pulled, err := remote.Image(child.ref(t, repo+":1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := validateImage(pulled); err != nil {
			t.Errorf("pull %s after healing: %v", repo, err)
		}
	}
	if len(child.Quarantined()) != 0 || testutil.ToFloat64(child.scrub.metrics.healed) != 2 {
		t.Errorf("quarantined %v, healed counter %v; want none, 2", child.Quarantined(), testutil.ToFloat64(child.scrub.metrics.healed))
	}
	entries, _ := os.ReadDir(filepath.Join(child.dir, "registry/docker/registry/v2/outpost-quarantine"))
	if len(entries) != 0 {
		t.Errorf("%d files left in quarantine after healing", len(entries))
	}
}

// validateImage reads every blob of img, which checks each against its digest.
func validateImage(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// TestScrubRateIsBounded: with a cap on bytes per second the scrub takes at least as
// long as the cap says, and reports its rate.
func TestScrubRateIsBounded(t *testing.T) {
	ctx := context.Background()
	tr := startRegistry(t, ReadWrite)
	img := content.Append(t, content.Image(t, 0), content.Layer(t, 3<<20, "application/vnd.oci.image.layer.v1.tar"))
	if err := remote.Write(tr.ref(t, "big/one:1"), img); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	free, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fast := time.Since(start)
	tr.cfg.Scrub.BytesPerSecond = 2 << 20 // the first 1 MiB is the burst: ~1 s for 3 MiB
	start = time.Now()
	capped, err := tr.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slow := time.Since(start)
	t.Logf("uncapped: %d blobs, %d bytes in %s (%.0f MiB/s); capped at 2 MiB/s: %s",
		free.Blobs, free.Bytes, fast, float64(free.Bytes)/(1<<20)/fast.Seconds(), slow)
	if capped.Bytes != free.Bytes || slow < 900*time.Millisecond {
		t.Errorf("capped scrub read %d bytes in %s; want %d in at least 0.9 s", capped.Bytes, slow, free.Bytes)
	}
}

// BenchmarkScrub measures a whole-store scrub: many small blobs (the cost is per
// blob: stat, open, hash) and fewer large ones (the cost is the bytes).
// go test -run '^$' -bench BenchmarkScrub -benchtime 3x ./registry/
func BenchmarkScrub(b *testing.B) {
	for _, tc := range []struct {
		name  string
		count int
		size  int
	}{{"small-1KiB", 2000, 1 << 10}, {"large-4MiB", 64, 4 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			tr := startRegistry(b, ReadWrite)
			data := make([]byte, tc.size)
			for i := range tc.count {
				copy(data, fmt.Sprintf("blob %d ", i))
				d := digest.FromBytes(data)
				src := &source{data: data}
				if err := tr.WriteBlob(ctx, "bench/blobs", d.String(), int64(len(data)), src.open); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			var blobs, bytes int64
			for b.Loop() {
				rep, err := tr.Scrub(ctx, ScrubOptions{})
				if err != nil || len(rep.Corrupt) != 0 {
					b.Fatal(err, rep.Corrupt)
				}
				blobs, bytes = blobs+rep.Blobs, bytes+rep.Bytes
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(blobs)/s, "blobs/s")
			b.ReportMetric(float64(bytes)/s/(1<<20), "MiB/s")
		})
	}
}
