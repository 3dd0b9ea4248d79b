package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/test/content"
)

// blobFile is where node n's filesystem storage keeps blob d's bytes.
func blobFile(n *Node, d string) string {
	hexd := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(n.Data(), "registry/docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
}

// fileDigest is the sha256 of a file's bytes, as a digest.
func fileDigest(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:]), nil
}

// flipByte damages a stored blob in place, as a failing disk would.
func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstLayer(t *testing.T, img v1.Image) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// cranePull pulls ref with crane, which checks every blob against its digest.
func cranePull(t *testing.T, n *Node, ref string) error {
	out, err := Run(t, clientTimeout, Tool(t, "crane"), "pull", "--insecure", "--format", "oci", n.Host+"/"+ref, filepath.Join(t.TempDir(), "pull"))
	if err != nil {
		return fmt.Errorf("crane pull %s at %s: %v: %s", ref, n.opts.Name, err, strings.TrimSpace(out))
	}
	return nil
}

// healed waits until blob d's file at n holds d's bytes again.
func healed(t *testing.T, n *Node, d string) {
	t.Helper()
	Eventually(t, replicationTimeout, func() error {
		got, err := fileDigest(blobFile(n, d))
		if err != nil {
			return fmt.Errorf("blob %s at %s: %v", d, n.opts.Name, err)
		}
		if got != d {
			return fmt.Errorf("blob %s at %s still hashes to %s", d, n.opts.Name, got)
		}
		return nil
	})
}

// logged says whether one line of n's log holds every part.
func logged(n *Node, parts ...string) bool {
	for _, line := range strings.Split(n.Output(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// metric reads one sample of n's /metrics ("name" or "name{labels}").
func metric(t *testing.T, n *Node, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(scrape(t, n))
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestIntegrityScrubHealsChildrenAndReportsAtRoot: a blob damaged on a site's disk
// is served as good by plain distribution; here (a) a resync of the site re-hashes
// what it holds in scope and fetches the bad blob again, (b) `outpost scrub` at the
// site does the same for another, (c) a site's scheduled scrub finds and heals one
// by itself, and (d) at the root, with no parent to heal from, a damaged blob is
// reported (status detail, metric, the scrub's exit) and answered 404 instead of bad
// bytes, until a client pushes it again.
func TestIntegrityScrubHealsChildrenAndReportsAtRoot(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	sitea := StartChild(t, root, Child{Name: "sitea", Mode: "ReadOnly", Repositories: []string{"i/*"},
		ServeArgs: []string{"--scrub-interval", "0"}})
	siteb := StartChild(t, root, Child{Name: "siteb", Mode: "ReadOnly", Repositories: []string{"i/*"},
		ServeArgs: []string{"--scrub-interval", "1s"}})

	imgs := map[string]v1.Image{}
	want := map[string]string{}
	for _, tag := range []string{"1", "2", "3"} {
		img := content.Image(t, 2)
		if err := remote.Write(mustRef(t, root, "i/app:"+tag), img, Auth); err != nil {
			t.Fatal(err)
		}
		imgs[tag], want[tag] = img, content.Digest(t, img)
	}
	// A second repository links the first image's blobs too: healing in place heals both.
	if err := remote.Write(mustRef(t, root, "i/copy:1"), imgs["1"], Auth); err != nil {
		t.Fatal(err)
	}
	eventuallyConverged(t, "i/app", want, sitea, siteb)
	eventuallyConverged(t, "i/copy", map[string]string{"1": want["1"]}, sitea, siteb)

	// (a) node resync heals a flipped byte.
	bad := firstLayer(t, imgs["1"])
	flipByte(t, blobFile(sitea, bad))
	if err := cranePull(t, sitea, "i/app:1"); err == nil {
		t.Fatal("crane pulled an image with a damaged layer: the damage did not take")
	}
	root.MustCLI(t, "node", "resync", "sitea")
	healed(t, sitea, bad)
	for _, ref := range []string{"i/app:1", "i/copy:1"} {
		if err := cranePull(t, sitea, ref); err != nil {
			t.Errorf("after resync: %v", err)
		}
	}
	if !logged(sitea, `"msg":"scrubbed"`, `"why":"resync"`, `"corrupt":1,`) {
		t.Error("sitea did not log a resync scrub that found the blob")
	}

	// (b) outpost scrub at the site heals a truncated blob.
	bad2 := firstLayer(t, imgs["2"])
	if err := os.Truncate(blobFile(sitea, bad2), 7); err != nil {
		t.Fatal(err)
	}
	out := sitea.MustCLI(t, "scrub")
	if !strings.Contains(out, "1 corrupt") || !strings.Contains(out, bad2) || !strings.Contains(out, ": healed") {
		t.Errorf("outpost scrub at sitea printed:\n%s\nwant 1 corrupt, %s healed", out, bad2)
	}
	healed(t, sitea, bad2)
	if err := cranePull(t, sitea, "i/app:2"); err != nil {
		t.Errorf("after scrub: %v", err)
	}
	if got := metric(t, sitea, "outpost_scrub_corrupt_blobs_total"); got != 2 {
		t.Errorf("sitea outpost_scrub_corrupt_blobs_total %v, want 2 (resync, scrub)", got)
	}
	if got := metric(t, sitea, "outpost_scrub_healed_blobs_total"); got != 2 {
		t.Errorf("sitea outpost_scrub_healed_blobs_total %v, want 2", got)
	}
	if metric(t, sitea, "outpost_scrub_blobs_checked_total") < 1 || metric(t, sitea, "outpost_scrub_last_run_timestamp_seconds") < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Error("sitea's checked-blobs and last-run metrics were not set")
	}

	// (c) the scheduled scrub at siteb finds and heals one by itself.
	bad3 := firstLayer(t, imgs["3"])
	flipByte(t, blobFile(siteb, bad3))
	healed(t, siteb, bad3)
	if got := metric(t, siteb, "outpost_scrub_corrupt_blobs_total"); got != 1 {
		t.Errorf("siteb outpost_scrub_corrupt_blobs_total %v, want 1", got)
	}
	if !logged(siteb, `"msg":"scrubbed"`, `"why":"scheduled"`, `"corrupt":1,`) {
		t.Error("siteb did not log a scheduled scrub that found the blob")
	}
	if err := cranePull(t, siteb, "i/app:3"); err != nil {
		t.Errorf("after the scheduled scrub: %v", err)
	}

	// (d) at the root: reported, and not served as good.
	flipByte(t, blobFile(root, bad))
	out, err := root.CLI(t, "scrub")
	if err == nil || !strings.Contains(out, "NOT healed") || !strings.Contains(out, "1 corrupt blobs are not healed") {
		t.Errorf("outpost scrub at the root: %v\n%s\nwant a failure naming the blob not healed", err, out)
	}
	req, _ := http.NewRequest(http.MethodGet, root.URL+"/v2/i/app/blobs/"+bad, nil)
	resp, err := http.DefaultClient.Do(Authorize(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") || !strings.Contains(string(body), "found corrupt") {
		t.Errorf("GET of the damaged blob at the root: %d %s; want 404 BLOB_UNKNOWN saying it was found corrupt", resp.StatusCode, body)
	}
	if got := metric(t, root, "outpost_scrub_corrupt_blobs_total"); got != 1 {
		t.Errorf("root outpost_scrub_corrupt_blobs_total %v, want 1", got)
	}
	if got := metric(t, root, "outpost_scrub_quarantined_blobs"); got != 1 {
		t.Errorf("root outpost_scrub_quarantined_blobs %v, want 1", got)
	}
	Eventually(t, 10*time.Second, func() error { return statusDetail(t, root, "BLOB_CORRUPT", bad) })
	if !strings.Contains(root.Output(), "corrupt blob found and set aside") {
		t.Error("the root did not log the corrupt blob")
	}
	// A client's push of the blob stores it again: served and no longer reported.
	// (go-containerregistry's image push stops at the existing manifest; a client
	// that checks each blob, like docker push, sends it.)
	ls, err := imgs["1"].Layers()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(root.Host+"/i/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, ls[0], Auth); err != nil {
		t.Fatal(err)
	}
	healed(t, root, bad)
	verifyImages(t, root, "i/copy", map[string]string{"1": want["1"]})
	if out := root.MustCLI(t, "scrub"); !strings.Contains(out, "0 corrupt") {
		t.Errorf("scrub after the push:\n%s", out)
	}
	if got := metric(t, root, "outpost_scrub_quarantined_blobs"); got != 0 {
		t.Errorf("root outpost_scrub_quarantined_blobs %v after the push, want 0", got)
	}
}

// statusDetail says whether node n's own status (`outpost status`) has a detail
// with code whose message names what.
func statusDetail(t *testing.T, n *Node, code, what string) error {
	var st hierarchy.Status
	out, err := n.CLI(t, "status", "--output", "json")
	if err != nil {
		return err
	}
	if err := jsonOf(out, &st); err != nil {
		return err
	}
	for _, d := range st.Details {
		if d.Code == code && strings.Contains(d.Message, what) {
			return nil
		}
	}
	return fmt.Errorf("status of %s (%s) has no %s detail naming %s: %+v", n.opts.Name, st.State, code, what, st.Details)
}

// TestIntegrityDamagedEventLogIsReported: a node whose EVENTS block file was cut
// short while it was down says so at start (log, /readyz 503, status detail),
// `outpost events` answers promptly with what remains, and after the documented
// operator action it is ready again, also across a restart.
func TestIntegrityDamagedEventLogIsReported(t *testing.T) {
	node := StartNode(t, NodeOptions{Name: "logsite"})
	const pushes = 30
	pushMany(t, node, "e/app", pushes)
	if got := len(eventLog(t, node)); got != pushes {
		t.Fatalf("%d events before the damage, want %d", got, pushes)
	}
	node.Stop()
	blk := filepath.Join(node.Data(), "nats/jetstream/$G/streams/EVENTS/msgs/1.blk")
	fi, err := os.Stat(blk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(blk, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	node.Start()

	if !strings.Contains(node.Output(), "event log damaged") || !strings.Contains(node.Output(), "events lost") {
		t.Errorf("no log line says the event log is damaged and what it lost")
	}
	ready := func() (int, string) {
		resp, err := http.Get(node.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := ready(); code != http.StatusServiceUnavailable || !strings.Contains(body, "EVENTS damaged") || !strings.Contains(body, "outpost events repair --ack-loss") {
		t.Errorf("/readyz %d %q; want 503 naming the damage and the repair", code, body)
	}
	start := time.Now()
	remaining := eventLog(t, node)
	took := time.Since(start)
	t.Logf("outpost events on the damaged log: %d of %d events in %s", len(remaining), pushes, took)
	if took > 10*time.Second || len(remaining) == 0 || len(remaining) >= pushes {
		t.Errorf("outpost events: %d events in %s; want what remains (some, not all) at once", len(remaining), took)
	}
	Eventually(t, 10*time.Second, func() error { return statusDetail(t, node, "EVENT_LOG_DAMAGED", "events lost") })

	// Only the operator may acknowledge the loss, scrub, or read the details.
	for _, tc := range []struct{ name, method, path, bearer string }{
		{"repair without a token", http.MethodPost, "/outpost/v1/events/repair?ack-loss=true", ""},
		{"repair with a wrong token", http.MethodPost, "/outpost/v1/events/repair?ack-loss=true", "not-the-operator-token"},
		{"repair with the admin token's name as token", http.MethodPost, "/outpost/v1/events/repair?ack-loss=true", "admin"},
		{"scrub without a token", http.MethodPost, "/outpost/v1/scrub", ""},
		{"last scrub with a wrong token", http.MethodGet, "/outpost/v1/scrub", "x"},
		{"status without a token", http.MethodGet, "/outpost/v1/status", ""},
	} {
		req, _ := http.NewRequest(tc.method, node.URL+tc.path, nil)
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "operator token") {
			t.Errorf("%s: %d %s; want 401 asking for the operator token", tc.name, resp.StatusCode, b)
		}
	}
	if out, err := node.CLI(t, "events", "repair"); err == nil || !strings.Contains(out, "--ack-loss") {
		t.Errorf("repair without --ack-loss: %v %s; want a refusal naming --ack-loss", err, out)
	}
	if code, _ := ready(); code != http.StatusServiceUnavailable {
		t.Errorf("ready after a refused repair: %d", code)
	}
	out := node.MustCLI(t, "events", "repair", "--ack-loss")
	if !strings.Contains(out, fmt.Sprintf("loss of %d events", pushes-len(remaining))) {
		t.Errorf("repair printed %q, want the loss of %d events", out, pushes-len(remaining))
	}
	if code, body := ready(); code != http.StatusOK {
		t.Errorf("/readyz after repair: %d %s", code, body)
	}
	// The log goes on, and the repaired damage is not reported again at start.
	pushMany(t, node, "e/more", 2)
	node.Stop()
	node.Start()
	if code, body := ready(); code != http.StatusOK {
		t.Errorf("/readyz after a restart: %d %s", code, body)
	}
	if got := len(eventLog(t, node)); got != len(remaining)+2 {
		t.Errorf("%d events after restart, want %d", got, len(remaining)+2)
	}
}
