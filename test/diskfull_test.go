package test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/outpost-edge/outpost/test/content"
)

// smallDisk mounts a tmpfs of size (as "64m") for a node's data: a real file
// system that fills up. It needs root (or CAP_SYS_ADMIN); elsewhere the test skips.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("a full disk is simulated with a small tmpfs, and mounting one is not permitted here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fillUp writes file until the disk has no space left.
func fillUp(t *testing.T, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(Authorize(mustRequest(t, http.MethodGet, url)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestAFullDiskIsAClearErrorAndLosesNothing: pushes on a node whose disk fills up
// get a 507 that says the disk is full and names no path of the server; /readyz
// says why it is not ready; once space is freed the node takes pushes again (after
// the restart /healthz asks for, if JetStream itself met the full disk), and every
// push acknowledged before (content and event) is there, also after a SIGKILL.
func TestAFullDiskIsAClearErrorAndLosesNothing(t *testing.T) {
	disk := smallDisk(t, "64m")
	const reserve = 8 << 20
	// Space someone else holds on the same disk, freed later by the operator.
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	node := StartNode(t, NodeOptions{Data: filepath.Join(disk, "data"), Args: []string{"--min-free-disk", fmt.Sprint(reserve)}})

	pushed := map[string]string{} // tag -> digest
	var refusal error
	for i := range 40 {
		img := content.Append(t, content.Image(t, 1), content.Layer(t, 3<<20, types.DockerLayer))
		tag := fmt.Sprintf("full/app:%d", i)
		ref, err := name.ParseReference(node.Host+"/"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if refusal = remote.Write(ref, img, Auth); refusal != nil {
			break
		}
		pushed[tag] = content.Digest(t, img)
	}
	if refusal == nil || len(pushed) < 3 {
		t.Fatalf("after %d pushes of 3 MiB on a 64 MiB disk: %v; want a few, then a refusal", len(pushed), refusal)
	}
	t.Logf("%d pushes of 3 MiB, then: %v", len(pushed), refusal)
	for _, leak := range []string{disk, "/tmp", "/docker/registry"} {
		if strings.Contains(refusal.Error(), leak) {
			t.Errorf("the refusal names a server path (%s): %v", leak, refusal)
		}
	}
	var terr *transport.Error
	if !errors.As(refusal, &terr) || terr.StatusCode != http.StatusInsufficientStorage || !strings.Contains(refusal.Error(), "the node's disk is full") {
		t.Errorf("the refusal: %v; want 507 saying the node's disk is full", refusal)
	}
	// Something else takes the rest of the disk, to the last byte.
	fillUp(t, filepath.Join(disk, "filler2"))
	// Any write says so at once; reads go on.
	resp, err := http.DefaultClient.Do(Authorize(mustRequest(t, http.MethodPost, node.URL+"/v2/full/other/blobs/uploads/")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(body), "disk is full") || strings.Contains(string(body), disk) {
		t.Errorf("starting an upload on the full disk: %s %s", resp.Status, body)
	}
	if err := remote.Write(mustRef(t, node, "full/small:1"), content.Image(t, 1), Auth); err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Errorf("a small push on the full disk: %v", err)
	}
	status, ready := get(t, node.URL+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(ready, "disk is full") || strings.Contains(ready, disk) {
		t.Errorf("/readyz on the full disk: %d %q; want 503 saying the disk is full, without paths", status, ready)
	}
	t.Logf("/readyz on the full disk: %s", strings.TrimSpace(ready))
	// A write the reserve does not cover (a management write into the node's
	// buckets) meets the full disk in JetStream, which then refuses that stream's
	// writes until a restart: /readyz says so, without paths.
	if out, err := node.CLI(t, "node", "create", "shipone", "--repository", "fleet/*"); err == nil {
		t.Errorf("node create on a disk full to the last byte worked:\n%s", out)
	}
	status, ready = get(t, node.URL+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(ready, "the disk was full") || strings.Contains(ready, disk) {
		t.Errorf("/readyz after JetStream met the full disk: %d %q", status, ready)
	}
	if status, body := get(t, node.URL+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz while the disk is still full: %d %s; want ok (a restart would not help)", status, body)
	}

	// The operator frees space. Liveness then asks for the restart that opens the
	// store again (while the disk was full it did not: a restart would not help).
	for _, f := range []string{filler, filepath.Join(disk, "filler2")} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 10*time.Second, func() error {
		if status, body := get(t, node.URL+"/healthz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "restart the node") {
			return fmt.Errorf("/healthz after freeing space: %d %s; want 503 asking for a restart", status, body)
		}
		return nil
	})
	node.Stop()
	node.Start()
	if status, ready := get(t, node.URL+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz after freeing space and a restart: %d %s", status, ready)
	}
	node.MustCLI(t, "node", "create", "shipone", "--repository", "fleet/*")
	pushed["full/app:after"] = push(t, node, "full/app:after", content.Image(t, 1))

	// Every acknowledged push is there, with its event, also after a SIGKILL.
	check := func(when string) {
		t.Helper()
		for tag, want := range pushed {
			if got, err := resolve(node, tag); err != nil || got != want {
				t.Errorf("%s %s: %q %v, want %s", tag, when, got, err, want)
			}
		}
		log := node.MustCLI(t, "events", "--output", "json")
		for tag, want := range pushed {
			_, t2, _ := strings.Cut(tag, ":")
			if !strings.Contains(log, `"tag":"`+t2+`"`) || !strings.Contains(log, want) {
				t.Errorf("%s %s: no push event for %s (%s) in the log", when, tag, t2, want)
			}
		}
	}
	check("after freeing space")
	node.Kill()
	node.Start()
	check("after SIGKILL and restart")
}
