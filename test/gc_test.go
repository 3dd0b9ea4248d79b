package test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry"
	"github.com/outpost-edge/outpost/test/content"
)

// registryBytes is what node n's registry storage uses on disk: the sizes of its files.
func registryBytes(t *testing.T, n *Node) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(filepath.Join(n.Data(), "registry"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// blobSizes are an image's layers, config and manifest by digest, with their sizes.
func blobSizes(t *testing.T, img v1.Image) map[string]int64 {
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

// setClockOffset moves the clock a node reads ages and schedules by (serve
// --clock-offset-file) to now+d.
func setClockOffset(t *testing.T, file string, d time.Duration) {
	t.Helper()
	if err := os.WriteFile(file, []byte(d.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// gcAnswer runs `outpost gc ARGS --output json` at n.
func gcAnswer(t *testing.T, n *Node, args ...string) registry.GCAnswer {
	t.Helper()
	out := n.MustCLI(t, append([]string{"gc", "--output", "json"}, args...)...)
	var ans registry.GCAnswer
	if err := jsonOf(out, &ans); err != nil || ans.Report == nil {
		t.Fatalf("outpost gc %v at %s: %v in %q", args, n.opts.Name, err, out)
	}
	return ans
}

func gcFigures(r *registry.GCReport) string {
	return fmt.Sprintf("%d blobs, %d bytes, %d links, %d referrer entries, %d parts", r.Blobs, r.Bytes, r.LayerLinks, r.ReferrerEntries, r.Parts)
}

// TestGCReclaimsDiskAtRootAndSiteWhilePushesAndCopiesRun: two images share a
// layer; one is deleted at the root and the delete reaches the site. A dry run at
// each node removes nothing (disk use unchanged) and predicts the figures of the
// real run; then `outpost gc` at the root and the site's scheduled collection drop
// each node's disk use by the deleted image's unique blobs, the shared layer stays,
// the other image pulls whole at both (crane). Then pushes at the root and at the
// site, and their replication down and up, run while both nodes collect again and
// again: every image pushed pulls whole and verified at both. Metrics, the status and the CLI's
// exit codes say the same.
func TestGCReclaimsDiskAtRootAndSiteWhilePushesAndCopiesRun(t *testing.T) {
	rootClock := filepath.Join(t.TempDir(), "root-clock")
	siteClock := filepath.Join(t.TempDir(), "site-clock")
	setClockOffset(t, rootClock, 0)
	setClockOffset(t, siteClock, 0)
	// The site collects on a schedule three hours from now (its local time): the
	// test moves its clock there.
	at := time.Now().Add(3 * time.Hour)
	schedule := fmt.Sprintf("%d %d * * *", at.Minute(), at.Hour())
	root := StartNode(t, NodeOptions{Args: []string{"--clock-offset-file", rootClock}})
	site := StartChild(t, root, Child{Name: "gcsite", Mode: "ReadWrite", Repositories: []string{"g/*"},
		ServeArgs: []string{"--clock-offset-file", siteClock, "--gc-schedule", schedule}})

	shared := content.Layer(t, 1<<20, types.OCILayer)
	kept := content.Append(t, content.OCIImage(t, 0), shared, content.Layer(t, 512<<10, types.OCILayer))
	gone := content.Append(t, content.OCIImage(t, 0), shared, content.Layer(t, 2<<20, types.OCILayer), content.Layer(t, 1<<20, types.OCILayer))
	want := map[string]string{"kept": push(t, root, "g/app:kept", kept), "gone": push(t, root, "g/app:gone", gone)}
	eventuallyConverged(t, "g/app", want, site)
	if err := remote.Delete(mustRef(t, root, "g/app@"+want["gone"]), Auth); err != nil {
		t.Fatal(err)
	}
	delete(want, "gone")
	eventuallyConverged(t, "g/app", want, site)

	unique := blobSizes(t, gone)
	for d := range blobSizes(t, kept) {
		delete(unique, d)
	}
	var uniqueBytes int64
	for _, s := range unique {
		uniqueBytes += s
	}
	if len(unique) != 4 || uniqueBytes < 3<<20 {
		t.Fatalf("the deleted image has %d unique blobs of %d bytes; want 4 (two layers, config, manifest) over 3 MiB", len(unique), uniqueBytes)
	}

	// Minutes old: within the grace, nothing goes.
	if ans := gcAnswer(t, root); ans.Report.Blobs != 0 {
		t.Errorf("GC at the root within the grace removed %s", gcFigures(ans.Report))
	}
	setClockOffset(t, rootClock, 2*time.Hour)
	setClockOffset(t, siteClock, 2*time.Hour)

	dry := map[*Node]*registry.GCReport{}
	before := map[*Node]int64{}
	for _, n := range []*Node{root, site} {
		before[n] = registryBytes(t, n)
		dry[n] = gcAnswer(t, n, "--dry-run").Report
		if after := registryBytes(t, n); after != before[n] {
			t.Errorf("dry run at %s changed disk use: %d -> %d bytes", n.opts.Name, before[n], after)
		}
		if !dry[n].DryRun || dry[n].Blobs != int64(len(unique)) || dry[n].Bytes != uniqueBytes {
			t.Errorf("dry run at %s: %s; want %d blobs, %d bytes", n.opts.Name, gcFigures(dry[n]), len(unique), uniqueBytes)
		}
	}
	out := root.MustCLI(t, "gc", "--dry-run")
	if !strings.Contains(out, "dry run, nothing removed: would remove 4 blobs") {
		t.Errorf("outpost gc --dry-run printed:\n%s", out)
	}

	runs := map[*Node]*registry.GCReport{root: gcAnswer(t, root).Report}
	setClockOffset(t, siteClock, 4*time.Hour) // past the site's schedule
	Eventually(t, 30*time.Second, func() error {
		ans := gcAnswer(t, site, "--last")
		if ans.Report.Why != "scheduled" {
			return fmt.Errorf("the site's last collection was %q, not its scheduled one", ans.Report.Why)
		}
		runs[site] = ans.Report
		return nil
	})
	for _, n := range []*Node{root, site} {
		rep := runs[n]
		if gcFigures(rep) != gcFigures(dry[n]) {
			t.Errorf("at %s the dry run predicted %s, GC removed %s", n.opts.Name, gcFigures(dry[n]), gcFigures(rep))
		}
		drop := before[n] - registryBytes(t, n)
		t.Logf("%s: disk use %d -> %d bytes (dropped %d; the deleted image's unique blobs are %d bytes)", n.opts.Name, before[n], before[n]-drop, drop, uniqueBytes)
		// Blobs, plus their link files and directories' small files.
		if drop < uniqueBytes || drop > uniqueBytes+4096 {
			t.Errorf("disk use at %s dropped %d bytes; want the deleted image's unique %d bytes (and a few link files)", n.opts.Name, drop, uniqueBytes)
		}
		for d := range unique {
			if fileExists(blobFile(n, d)) {
				t.Errorf("%s still stores %s of the deleted image", n.opts.Name, d)
			}
		}
		if !fileExists(blobFile(n, content.Digest(t, shared))) {
			t.Errorf("%s lost the shared layer", n.opts.Name)
		}
		if err := cranePull(t, n, "g/app:kept"); err != nil {
			t.Error(err)
		}
		if got := metric(t, n, "outpost_gc_reclaimed_bytes_total"); got != float64(rep.Reclaimed()) {
			t.Errorf("%s outpost_gc_reclaimed_bytes_total %v, want %d", n.opts.Name, got, rep.Reclaimed())
		}
		if got := metric(t, n, "outpost_gc_reclaimed_blobs_total"); got != float64(len(unique)) {
			t.Errorf("%s outpost_gc_reclaimed_blobs_total %v, want %d", n.opts.Name, got, len(unique))
		}
		if metric(t, n, `outpost_gc_runs_total{dry_run="true",result="ok"}`) < 1 || metric(t, n, `outpost_gc_last_run_timestamp_seconds`) < float64(time.Now().Add(-time.Hour).Unix()) {
			t.Errorf("%s: runs or last-run metric not set", n.opts.Name)
		}
		var st hierarchy.Status
		if err := jsonOf(n.MustCLI(t, "status", "--output", "json"), &st); err != nil {
			t.Fatal(err)
		}
		if st.GC == nil || st.GC.ReclaimedBytes != rep.Reclaimed() || st.GC.ReclaimedBlobs != rep.Blobs {
			t.Errorf("status of %s: gc %+v, want %d bytes and %d blobs reclaimed", n.opts.Name, st.GC, rep.Reclaimed(), rep.Blobs)
		}
		if !logged(n, `"msg":"garbage collected"`, fmt.Sprintf(`"bytes":%d`, rep.Bytes)) {
			t.Errorf("%s did not log what it reclaimed", n.opts.Name)
		}
	}
	if out := site.MustCLI(t, "status"); !strings.Contains(out, "gc: "+fmt.Sprint(runs[site].Reclaimed())+" bytes") || !strings.Contains(out, "; next ") {
		t.Errorf("outpost status at the site:\n%s\nwant the bytes its collection reclaimed and the next run", out)
	}

	// Pushes at the root and at the site and their copies down and up while both
	// collect without pause; GC's clocks stay hours ahead of the files', so only the grace rule's
	// record of what requests named keeps a push or a copy whole.
	var imgs []v1.Image
	for range 8 {
		imgs = append(imgs, content.Append(t, content.OCIImage(t, 1), content.Layer(t, 256<<10, types.OCILayer)))
	}
	stop := make(chan struct{})
	var collectors sync.WaitGroup
	collections := map[*Node]int{}
	var mu sync.Mutex
	for _, n := range []*Node{root, site} {
		collectors.Add(1)
		go func() {
			defer collectors.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := n.CLI(t, "gc")
				if err != nil && !strings.Contains(out, "already running") {
					t.Errorf("outpost gc at %s during pushes: %v\n%s", n.opts.Name, err, out)
					return
				}
				mu.Lock()
				collections[n]++
				mu.Unlock()
			}
		}()
	}
	for i, img := range imgs {
		at := root // copied down to the site
		if i%2 == 1 {
			at = site // copied up to the root
		}
		want[fmt.Sprint("during", i)] = push(t, at, fmt.Sprintf("g/app:during%d", i), img)
	}
	eventuallyConverged(t, "g/app", want, root, site)
	close(stop)
	collectors.Wait()
	t.Logf("collections during the pushes: root %d, site %d", collections[root], collections[site])
	if collections[root] < 2 || collections[site] < 2 {
		t.Errorf("collections during the pushes: root %d, site %d; want several at each", collections[root], collections[site])
	}
	gcAnswer(t, root)
	gcAnswer(t, site)
	for _, n := range []*Node{root, site} {
		verifyImages(t, n, "g/app", want)
		for tag := range want {
			if err := cranePull(t, n, "g/app:"+tag); err != nil {
				t.Error(err)
			}
		}
	}

	// Exit codes (outpost --help): 0 above; 3 for a wrong token, 5 for a node that is
	// not there, 2 for a usage mistake, each with the reason.
	for _, c := range []struct {
		args []string
		want string
		code string
	}{
		{[]string{"gc", "--server", site.URL, "--token", "wrong"}, "operator token", "exit status 3"},
		{[]string{"gc", "--server", "http://127.0.0.1:1"}, "Try: is `outpost serve` running there?", "exit status 5"},
		{[]string{"gc", "extra", "--server", site.URL}, "Try: see the examples in `outpost gc --help`", "exit status 2"},
		{[]string{"gc", "--last", "--dry-run", "--server", site.URL}, "give one of them", "exit status 2"},
	} {
		out, err := Run(t, time.Minute, Binary(t), c.args...)
		if err == nil || !strings.Contains(err.Error(), c.code) || !strings.Contains(out, c.want) {
			t.Errorf("outpost %v: %v\n%s\nwant %s saying %q", c.args, err, out, c.code, c.want)
		}
	}
}

// TestGCWithMessagesWaitingBehindAClosedWindow: while a site's window is closed, two
// pushes wait in its outbox at the root and one of the images is deleted. GC at the
// root keeps what the waiting image names (its manifest is stored) and removes the
// deleted one's blobs; when the link opens the site copies the first whole and
// applies the second's delete without a copy error: a message never needs a blob
// its manifest does not.
func TestGCWithMessagesWaitingBehindAClosedWindow(t *testing.T) {
	rootClock := filepath.Join(t.TempDir(), "root-clock")
	setClockOffset(t, rootClock, 0)
	window := newFakeClock(t)
	window.set(0, "12:00") // outside the 02:00-03:00 window
	root := StartNode(t, NodeOptions{Args: []string{"--clock-offset-file", rootClock}})
	ship := StartChild(t, root, Child{Name: "gcship", Mode: "ReadOnly", Repositories: []string{"w/*"},
		CreateArgs: []string{"--sync-schedule", "0 2 * * *", "--sync-window", "PT1H"},
		ServeArgs:  []string{"--clock-offset-file", window.file}})

	waiting := content.Append(t, content.OCIImage(t, 1), content.Layer(t, 256<<10, types.OCILayer))
	deleted := content.Append(t, content.OCIImage(t, 1), content.Layer(t, 256<<10, types.OCILayer))
	dw := push(t, root, "w/app:waiting", waiting)
	dd := push(t, root, "w/app:deleted", deleted)
	waitingWith(t, root, "gcship", true, false)
	if err := remote.Delete(mustRef(t, root, "w/app@"+dd), Auth); err != nil {
		t.Fatal(err)
	}
	setClockOffset(t, rootClock, 2*time.Hour)
	rep := gcAnswer(t, root).Report
	if want := int64(len(blobSizes(t, deleted))); rep.Blobs != want {
		t.Errorf("GC at the root removed %s; want the deleted image's %d blobs", gcFigures(rep), want)
	}
	for d := range blobSizes(t, waiting) {
		if !fileExists(blobFile(root, d)) {
			t.Errorf("GC removed %s, which the image waiting for the site names", d)
		}
	}
	if got, _ := resolve(ship, "w/app:waiting"); got != "" {
		t.Fatal("the image moved while the window was closed")
	}

	ship.MustCLI(t, "sync", "now")
	eventuallyConverged(t, "w/app", map[string]string{"waiting": dw}, ship)
	verifyImages(t, ship, "w/app", map[string]string{"waiting": dw})
	if err := cranePull(t, ship, "w/app:waiting"); err != nil {
		t.Error(err)
	}
	Eventually(t, replicationTimeout, func() error {
		var st hierarchy.Status
		if err := jsonOf(ship.MustCLI(t, "status", "--output", "json"), &st); err != nil {
			return err
		}
		for _, d := range st.Details {
			if d.Code == "LINK_ERROR" {
				return fmt.Errorf("the ship reports a copy error: %s", d.Message)
			}
		}
		return nil
	})
}
