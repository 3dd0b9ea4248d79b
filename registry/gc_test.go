package registry

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/test/content"
)

// gcClock is a test clock: the real time shifted by an offset the test moves.
type gcClock struct{ offset atomic.Int64 }

func (c *gcClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *gcClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// startGCRegistry is a registry whose GC reads ages from clock, with its metrics.
func startGCRegistry(t *testing.T, clock *gcClock, gc GCConfig) (*testRegistry, *prometheus.Registry) {
	t.Helper()
	metrics := prometheus.NewRegistry()
	gc.Now = clock.now
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, func(c *Config) {
		c.GC = gc
		c.Registerer = metrics
	})
	return tr, metrics
}

// diskBytes sums the sizes of the files under dir: what the node uses on disk.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func blobsOfImage(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := partial.ConfigLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range append(ls, cl) {
		d, _ := l.Digest()
		s, _ := l.Size()
		out[d.String()] = s
	}
	raw, _ := img.RawManifest()
	out[content.Digest(t, img)] = int64(len(raw))
	return out
}

func mustRequest(method, url, contentType string, body []byte) *http.Request {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", contentType)
	return req
}

func fileExistsAt(p string) bool { _, err := os.Stat(p); return err == nil }

// gcFigures are the figures a dry run must predict.
func gcFigures(r *GCReport) string {
	return fmt.Sprintf("blobs %d bytes %d links %d referrer entries %d parts %d part bytes %d recent %d",
		r.Blobs, r.Bytes, r.LayerLinks, r.ReferrerEntries, r.Parts, r.PartBytes, r.Recent)
}

// TestGCRemovesWhatNoManifestReferences: two images share a layer; one is deleted,
// a referrer's manifest is removed behind the index's back, a part written aside is
// left for weeks. A dry run removes nothing and predicts the figures; GC then
// removes exactly the deleted image's unique blobs (disk use drops by their size
// plus the part's), its links and the stale index entries; the shared layer, the
// other image, an image named by sha512 and its alias links stay whole. The
// metrics count the real run only.
func TestGCRemovesWhatNoManifestReferences(t *testing.T) {
	clock := &gcClock{}
	tr, metrics := startGCRegistry(t, clock, GCConfig{})
	ctx := context.Background()

	shared := content.Layer(t, 3000, types.OCILayer)
	keep := content.Append(t, content.Image(t, 1), shared)
	gone := content.Append(t, content.Image(t, 2), shared)
	for ref, img := range map[string]v1.Image{"app:keep": keep, "app:gone": gone, "other:keep": keep} {
		if err := remote.Write(tr.ref(t, ref), img); err != nil {
			t.Fatal(err)
		}
	}
	// An image whose manifest is stored by sha512 only (no sha256 tag).
	by512 := content.Image(t, 1)
	pushBlobs(t, tr.ref(t, "five").Context(), by512)
	raw512, _ := by512.RawManifest()
	sum := sha512.Sum512(raw512)
	d512 := "sha512:" + hex.EncodeToString(sum[:])
	if resp := tr.do(t, "PUT", "/v2/five/manifests/"+d512, content.MediaType(t, by512), raw512); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT by sha512: %d", resp.StatusCode)
	}
	// A referrer of keep whose manifest goes behind the index's back.
	desc, err := remote.Head(tr.ref(t, "app:keep"))
	if err != nil {
		t.Fatal(err)
	}
	sig := content.Artifact(t, "application/vnd.test.sig", desc)
	if err := remote.Write(tr.ref(t, "app:sig"), sig); err != nil {
		t.Fatal(err)
	}
	sigDigest := digest.Digest(content.Digest(t, sig))
	if err := os.RemoveAll(filepath.Dir(filepath.Join(tr.dir, "registry", manifestAliasLink("app", sigDigest)))); err != nil {
		t.Fatal(err)
	}
	// A part written aside long ago, and one a write is going on with.
	stalePart := filepath.Join(tr.dir, "registry", incomingRoot, strings.Repeat("a", 64))
	freshPart := filepath.Join(tr.dir, "registry", incomingRoot, strings.Repeat("b", 64))
	for _, p := range []string{stalePart, freshPart} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial bytes"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(stalePart, time.Now().Add(-30*24*time.Hour), time.Now().Add(-30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(tr.ref(t, "app@"+content.Digest(t, gone))); err != nil {
		t.Fatal(err)
	}

	// Unique to gone and to the removed referrer: their layers, configs and manifests.
	unique := blobsOfImage(t, gone)
	for d, s := range blobsOfImage(t, sig) {
		unique[d] = s
	}
	for d := range blobsOfImage(t, keep) {
		delete(unique, d)
	}
	var uniqueBytes int64
	for _, s := range unique {
		uniqueBytes += s
	}
	if len(unique) != 7 {
		t.Fatalf("%d unique blobs, want 7 (gone's two layers, config, manifest; the referrer's layer, config, manifest)", len(unique))
	}

	// Within the grace nothing goes: everything is minutes old.
	rep, err := tr.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 0 || rep.Recent < int64(len(unique)) || rep.Parts != 1 {
		t.Errorf("GC within the grace: %s; want no blob removed, %d kept as recent, the month-old part removed", gcFigures(rep), len(unique))
	}

	clock.advance(2 * DefaultGCGrace)
	before := diskBytes(t, tr.dir+"/registry")
	dry, err := tr.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := diskBytes(t, tr.dir+"/registry"); after != before {
		t.Errorf("dry run changed disk use: %d -> %d bytes", before, after)
	}
	for d := range unique {
		if !fileExistsAt(tr.blobFile(d)) {
			t.Errorf("dry run removed %s", d)
		}
	}
	if !fileExistsAt(stalePart) {
		t.Error("dry run removed the stale part")
	}
	if got := testutil.ToFloat64(tr.gc.metrics.bytes); got != 0 {
		t.Errorf("outpost_gc_reclaimed_bytes_total %v after a dry run, want 0", got)
	}

	rep, err = tr.GC(ctx, GCOptions{Why: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if gcFigures(rep) != gcFigures(dry) {
		t.Errorf("dry run predicted %s\nGC did            %s", gcFigures(dry), gcFigures(rep))
	}
	if rep.Blobs != int64(len(unique)) || rep.Bytes != uniqueBytes {
		t.Errorf("GC removed %d blobs, %d bytes; want the deleted image's %d unique blobs, %d bytes", rep.Blobs, rep.Bytes, len(unique), uniqueBytes)
	}
	if rep.ReferrerEntries != 1 || rep.Parts != 1 || rep.PartBytes != int64(len("partial bytes")) {
		t.Errorf("GC removed %d referrer entries and %d parts (%d bytes); want 1 and 1 (%d bytes)", rep.ReferrerEntries, rep.Parts, rep.PartBytes, len("partial bytes"))
	}
	if rep.LayerLinks != 5 { // gone's two layers and config, the referrer's layer and config
		t.Errorf("GC removed %d layer links, want 5", rep.LayerLinks)
	}
	after := diskBytes(t, tr.dir+"/registry")
	// Blobs and the part, plus link files (71 bytes each) and index entries.
	if drop := before - after; drop < uniqueBytes+rep.PartBytes || drop > uniqueBytes+rep.PartBytes+2048 {
		t.Errorf("disk use dropped %d bytes; want the unique blobs' %d plus the part's %d (and a few links)", drop, uniqueBytes, rep.PartBytes)
	}
	for d := range unique {
		if fileExistsAt(tr.blobFile(d)) {
			t.Errorf("unique blob %s of the deleted image is still stored", d)
		}
	}
	if fileExistsAt(stalePart) || !fileExistsAt(freshPart) {
		t.Errorf("stale part left: %v; fresh part removed: %v", fileExistsAt(stalePart), !fileExistsAt(freshPart))
	}
	for _, ref := range []string{"app:keep", "other:keep"} {
		img, err := remote.Image(tr.ref(t, ref))
		if err == nil {
			err = validateImage(img)
		}
		if err != nil {
			t.Errorf("%s after GC: %v", ref, err)
		}
	}
	img, err := remote.Image(tr.ref(t, "five@"+content.Digest(t, by512)))
	if err == nil {
		err = validateImage(img)
	}
	if err != nil {
		t.Errorf("the image stored by sha512 after GC: %v", err)
	}
	if resp := tr.do(t, "GET", "/v2/five/manifests/"+d512, "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET by sha512 after GC: %d", resp.StatusCode)
	}
	resp := tr.do(t, "GET", "/v2/app/referrers/"+desc.Digest.String(), "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("referrers after GC: %d", resp.StatusCode)
	}
	if left, _ := os.ReadDir(filepath.Join(tr.dir, "registry", referrersRoot, "app", "_subjects", "sha256", desc.Digest.Hex)); len(left) != 0 {
		t.Errorf("%d index entries left for the subject whose only referrer was deleted", len(left))
	}
	if got := testutil.ToFloat64(tr.gc.metrics.bytes); got != float64(uniqueBytes+rep.PartBytes) {
		t.Errorf("outpost_gc_reclaimed_bytes_total %v, want %d", got, uniqueBytes+rep.PartBytes)
	}
	if got := testutil.ToFloat64(tr.gc.metrics.blobs); got != float64(len(unique)) {
		t.Errorf("outpost_gc_reclaimed_blobs_total %v, want %d", got, len(unique))
	}
	if got := testutil.ToFloat64(tr.gc.metrics.runs.WithLabelValues("ok", "true")); got != 2 {
		t.Errorf("dry runs counted %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(metrics, "outpost_gc_last_run_timestamp_seconds"); err != nil || n != 1 {
		t.Errorf("outpost_gc_last_run_timestamp_seconds: %d series, %v", n, err)
	}
	last, lastRun := tr.LastGC()
	if last != rep || lastRun != rep {
		t.Error("LastGC does not return the last run")
	}

	again, err := tr.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Blobs != 0 || again.ReferrerEntries != 0 || again.Parts != 0 || again.LayerLinks != 0 {
		t.Errorf("a second GC removed more: %s", gcFigures(again))
	}
}

// TestGCKeepsWhatPushesInProgressNeed: blobs no manifest references any more and
// older than the grace by every clock are still kept when a push is about to name
// them (HEAD by a pusher, a replication write in process), and the manifest pushed
// after GC is accepted and whole. A blob nothing names goes.
func TestGCKeepsWhatPushesInProgressNeed(t *testing.T) {
	clock := &gcClock{}
	tr, _ := startGCRegistry(t, clock, GCConfig{Batch: 2})
	ctx := context.Background()

	// Three images pushed and deleted: their blobs are unreferenced.
	var olds []v1.Image
	for i := range 3 {
		img := content.Image(t, 2)
		ref := fmt.Sprintf("app:old%d", i)
		if err := remote.Write(tr.ref(t, ref), img); err != nil {
			t.Fatal(err)
		}
		if err := remote.Delete(tr.ref(t, "app@"+content.Digest(t, img))); err != nil {
			t.Fatal(err)
		}
		olds = append(olds, img)
	}
	clock.advance(3 * DefaultGCGrace) // old by the data, the links and every record so far
	// A client checks old0's blobs (HEAD: present), a replication write in process
	// links old1's; old2 nobody names.
	for d := range blobsOfImage(t, olds[0]) {
		if d == content.Digest(t, olds[0]) {
			continue // a manifest is no blob of the repository
		}
		if resp := tr.do(t, http.MethodHead, "/v2/app/blobs/"+d, "", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("HEAD %s: %d", d, resp.StatusCode)
		}
	}
	for d, size := range blobsOfImage(t, olds[1]) {
		if d == content.Digest(t, olds[1]) {
			continue // the manifest goes through the API
		}
		err := tr.WriteBlob(ctx, "mirror", d, size, func(context.Context, int64) (io.ReadCloser, error) {
			return nil, errors.New("the blob is stored: no bytes should be read")
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rep, err := tr.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// old2's four blobs, and old0's and old1's manifests (no push named them yet).
	if want := int64(len(blobsOfImage(t, olds[2])) + 2); rep.Blobs != want {
		t.Errorf("GC removed %d blobs, want %d: old2's and two manifests (old0's and old1's blobs were named within the grace)", rep.Blobs, want)
	}
	for d := range blobsOfImage(t, olds[2]) {
		if fileExistsAt(tr.blobFile(d)) {
			t.Errorf("old2's blob %s was kept though nothing named it", d)
		}
	}
	for i, repo := range []string{"app", "mirror"} {
		raw, _ := olds[i].RawManifest()
		if resp := tr.do(t, "PUT", "/v2/"+repo+"/manifests/again", content.MediaType(t, olds[i]), raw); resp.StatusCode != http.StatusCreated {
			t.Fatalf("manifest of old%d pushed after GC: %d %s", i, resp.StatusCode, ociMessage(resp))
		}
		img, err := remote.Image(tr.ref(t, repo+":again"))
		if err == nil {
			err = validateImage(img)
		}
		if err != nil {
			t.Errorf("old%d pushed again after GC: %v", i, err)
		}
	}

}

// TestGCDuringPushesAndCopies: pushes, pushes of deleted images and replication
// writes in process run while GC runs again and again, with GC's clock ahead of the
// files' by twice the grace (everything on disk looks old to it, so only the record
// of what requests named keeps a push whole): every manifest is accepted and every
// image pulls whole and verified.
func TestGCDuringPushesAndCopies(t *testing.T) {
	clock := &gcClock{}
	tr, _ := startGCRegistry(t, clock, GCConfig{Batch: 2})
	ctx := context.Background()
	// Pushes, pushes of deleted images and in-process writes while GC runs without
	// pause. GC's clock is ahead of the files' by twice the grace, so everything
	// on disk looks old to it: only the record of what requests named keeps a push
	// whole.
	type pushed struct {
		ref string
		img v1.Image
	}
	fresh := make([][]v1.Image, 3)
	deleted := make([][]v1.Image, 3)
	for w := range 3 {
		for i := range 4 {
			fresh[w] = append(fresh[w], content.Image(t, 2))
			prev := content.Image(t, 2)
			if err := remote.Write(tr.ref(t, fmt.Sprintf("race%d:prev%d", w, i)), prev); err != nil {
				t.Fatal(err)
			}
			if err := remote.Delete(tr.ref(t, fmt.Sprintf("race%d@%s", w, content.Digest(t, prev)))); err != nil {
				t.Fatal(err)
			}
			deleted[w] = append(deleted[w], prev)
		}
	}
	clock.advance(2 * DefaultGCGrace)
	stop := make(chan struct{})
	var gcs atomic.Int64
	var gcDone, wg sync.WaitGroup
	gcDone.Add(1)
	go func() {
		defer gcDone.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tr.GC(ctx, GCOptions{}); err != nil {
				t.Errorf("GC during pushes: %v", err)
				return
			}
			gcs.Add(1)
		}
	}()
	var mu sync.Mutex
	var all []pushed
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				// A new image, or a deleted one pushed again: its blobs are found
				// (HEAD) and not sent, unless GC removed them first.
				img := fresh[w][i/2]
				if i%2 == 1 {
					img = deleted[w][i/2]
				}
				ref := fmt.Sprintf("race%d:%d", w, i)
				if err := remote.Write(tr.ref(t, ref), img); err != nil {
					t.Errorf("push %s during GC: %v", ref, err)
					return
				}
				mu.Lock()
				all = append(all, pushed{ref, img})
				mu.Unlock()
			}
		}()
	}
	// Replication writes in process, then the manifest through the API.
	type copyJob struct {
		img   v1.Image
		blobs map[string][]byte
		raw   []byte
		mt    string
	}
	var copies []copyJob
	for range 6 {
		img := content.Image(t, 1)
		j := copyJob{img: img, blobs: map[string][]byte{}, mt: content.MediaType(t, img)}
		j.raw, _ = img.RawManifest()
		ls, _ := img.Layers()
		cl, _ := partial.ConfigLayer(img)
		for _, l := range append(ls, cl) {
			d, b := blobOf(t, l)
			j.blobs[d] = b
		}
		copies = append(copies, j)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, j := range copies {
			for d, b := range j.blobs {
				if err := tr.WriteBlob(ctx, "copied", d, int64(len(b)), (&source{data: b}).open); err != nil {
					t.Errorf("write blob during GC: %v", err)
					return
				}
			}
			resp, err := http.DefaultClient.Do(mustRequest("PUT", tr.URL+"/v2/copied/manifests/"+fmt.Sprint(i), j.mt, j.raw))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("manifest of a copy during GC: %s", resp.Status)
				return
			}
			mu.Lock()
			all = append(all, pushed{fmt.Sprintf("copied:%d", i), j.img})
			mu.Unlock()
		}
	}()
	wg.Wait()
	close(stop)
	gcDone.Wait()
	if gcs.Load() < 2 {
		t.Errorf("only %d GCs ran during the pushes", gcs.Load())
	}
	clock.advance(DefaultGCGrace + time.Minute)
	if _, err := tr.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		img, err := remote.Image(tr.ref(t, p.ref))
		if err == nil {
			err = validateImage(img)
		}
		if err != nil {
			t.Errorf("%s pushed during GC: %v", p.ref, err)
		} else if got := content.Digest(t, img); got != content.Digest(t, p.img) {
			t.Errorf("%s is %s, want %s", p.ref, got, content.Digest(t, p.img))
		}
	}
	t.Logf("%d GCs ran during %d pushes", gcs.Load(), len(all))
}

// TestGCScheduleRunsWhenItFalls: a schedule runs GC once when the clock passes its
// time, reports it as scheduled and names the next time; a second GC asked for
// while one runs is refused as running.
func TestGCScheduleRunsWhenItFalls(t *testing.T) {
	s, err := events.ParseSchedule("0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	clock := &gcClock{}
	real := time.Now()
	at := time.Date(real.Year(), real.Month(), real.Day(), 2, 59, 0, 0, time.Local).AddDate(0, 0, 1)
	clock.advance(at.Sub(real))
	tr, _ := startGCRegistry(t, clock, GCConfig{Schedule: s, Tick: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tr.RunGCSchedule(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for tr.NextGC().IsZero() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	want := time.Date(at.Year(), at.Month(), at.Day(), 3, 0, 0, 0, time.Local)
	if !tr.NextGC().Equal(want) {
		t.Fatalf("next GC %s, want %s", tr.NextGC(), want)
	}
	time.Sleep(50 * time.Millisecond)
	if last, _ := tr.LastGC(); last != nil {
		t.Fatal("GC ran before its time")
	}
	clock.advance(2 * time.Minute)
	for time.Now().Before(deadline) {
		if last, _ := tr.LastGC(); last != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	last, _ := tr.LastGC()
	if last == nil || last.Why != "scheduled" || last.DryRun {
		t.Fatalf("after the schedule's time: last GC %+v, want a scheduled run", last)
	}
	if !tr.NextGC().Equal(want.AddDate(0, 0, 1)) {
		t.Errorf("next GC %s, want %s", tr.NextGC(), want.AddDate(0, 0, 1))
	}

	tr.gc.running.Store(true)
	if _, err := tr.GC(ctx, GCOptions{}); !errors.Is(err, ErrGCRunning) {
		t.Errorf("GC while one runs: %v, want ErrGCRunning", err)
	}
	tr.gc.running.Store(false)
}

func TestGCConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  GCConfig
		want string
	}{
		{GCConfig{Grace: 10 * time.Second}, "gc grace 10s: must be at least 1m0s"},
		{GCConfig{PartGrace: time.Second}, "gc part grace 1s: must be at least 1m0s"},
		{GCConfig{Batch: -1}, "gc batch -1: must be 1 or more"},
		{GCConfig{Concurrency: -2}, "gc concurrency -2: must be 1 or more"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if err := DefaultGCConfig().Validate(); err != nil {
		t.Errorf("the default: %v", err)
	}
	if err := (GCConfig{}).Validate(); err != nil {
		t.Errorf("zero (defaults): %v", err)
	}
}

// BenchmarkGC measures a collection over many small manifests, half of them
// deleted: the cost is per manifest (read, parse) and per blob (walk, stat). A dry
// run does all the work of a real one but the deletes, so each iteration repeats it.
// go test -run '^$' -bench BenchmarkGC -benchtime 3x ./registry/
func BenchmarkGC(b *testing.B) {
	const images = 1000
	ctx := context.Background()
	clock := &gcClock{}
	tr := startRegistryIn(b, b.TempDir(), ReadWrite, func(c *Config) { c.GC.Now = clock.now })
	write := func(repo string, data []byte) digest.Digest {
		d := digest.FromBytes(data)
		if err := tr.WriteBlob(ctx, repo, d.String(), int64(len(data)), (&source{data: data}).open); err != nil {
			b.Fatal(err)
		}
		return d
	}
	for i := range images {
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":%d}`, i))
		layer := []byte(fmt.Sprintf("layer %d %s", i, strings.Repeat("x", 1000)))
		cd, ld := write("bench/app", cfg), write("bench/app", layer)
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
			`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`, cd, len(cfg), ld, len(layer))
		resp, err := http.DefaultClient.Do(mustRequest("PUT", fmt.Sprintf("%s/v2/bench/app/manifests/%d", tr.URL, i), "application/vnd.oci.image.manifest.v1+json", []byte(m)))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("manifest %d: %s", i, resp.Status)
		}
		if i%2 == 1 {
			req, _ := http.NewRequest(http.MethodDelete, tr.URL+"/v2/bench/app/manifests/"+digest.FromBytes([]byte(m)).String(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Fatalf("delete manifest %d: %s", i, resp.Status)
			}
		}
	}
	clock.advance(2 * DefaultGCGrace)
	b.ResetTimer()
	var blobs int64
	for b.Loop() {
		rep, err := tr.GC(ctx, GCOptions{DryRun: true})
		if err != nil || rep.Blobs != 3*images/2 {
			b.Fatalf("%v: %d blobs to remove, want %d", err, rep.Blobs, 3*images/2)
		}
		blobs += rep.Blobs + rep.Referenced
	}
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(blobs)/s, "blobs/s")
	b.StopTimer()
	start := time.Now()
	rep, err := tr.GC(ctx, GCOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("a real run removed %d blobs (%d bytes) of %d in %s", rep.Blobs, rep.Bytes, rep.Blobs+rep.Referenced, time.Since(start).Round(time.Millisecond))
}

// TestGCKeepsWhatAnIndexNames: an index's child manifest deleted on its own (the
// index still names it) keeps its blobs, so pushing the child again repairs the
// index; once the index is deleted too, all of it goes.
func TestGCKeepsWhatAnIndexNames(t *testing.T) {
	clock := &gcClock{}
	tr, _ := startGCRegistry(t, clock, GCConfig{})
	ctx := context.Background()
	idx, err := random.Index(1024, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tr.ref(t, "multi:1"), idx); err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	child, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(tr.ref(t, "multi@"+m.Manifests[0].Digest.String())); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * DefaultGCGrace)
	rep, err := tr.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 0 {
		t.Errorf("GC removed %d blobs while the index names all of them", rep.Blobs)
	}
	raw, _ := child.RawManifest()
	mt, _ := child.MediaType()
	if resp := tr.do(t, "PUT", "/v2/multi/manifests/"+m.Manifests[0].Digest.String(), string(mt), raw); resp.StatusCode != http.StatusCreated {
		t.Fatalf("the child pushed again: %d %s", resp.StatusCode, ociMessage(resp))
	}
	got, err := remote.Index(tr.ref(t, "multi:1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Manifests {
		img, err := got.Image(c.Digest)
		if err == nil {
			err = validateImage(img)
		}
		if err != nil {
			t.Errorf("child %s after GC: %v", c.Digest, err)
		}
	}
	if err := remote.Delete(tr.ref(t, "multi@"+content.Digest(t, idx))); err != nil {
		t.Fatal(err)
	}
	for _, c := range m.Manifests {
		if err := remote.Delete(tr.ref(t, "multi@"+c.Digest.String())); err != nil {
			t.Fatal(err)
		}
	}
	clock.advance(2 * DefaultGCGrace)
	if rep, err = tr.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	// The index, two children with two layers and a config each.
	if rep.Blobs != 1+2*4 || rep.Referenced != 0 {
		t.Errorf("GC after deleting everything removed %d blobs and kept %d referenced; want 9 and 0", rep.Blobs, rep.Referenced)
	}
}
