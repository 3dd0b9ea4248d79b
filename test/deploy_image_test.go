package test

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// imageStore is the buildah/podman store `make image` uses (the Makefile's
// IMAGE_ROOT): kept between runs, so the host-made build stage is made once.
const imageStore = "/var/tmp/outpost-buildah"

// podmanArgs run podman on make image's store. runc, not crun: crun refuses this
// machine's hybrid cgroup layout ("cgroups in hybrid mode not supported"), and
// without systemd podman needs the cgroupfs manager.
func podmanArgs(args ...string) []string {
	return append([]string{"--root", imageStore + "/root", "--runroot", imageStore + "/run",
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", "runc"}, args...)
}

// containerRun are the `podman run` flags this machine needs: the host network
// (the node listens on 127.0.0.1 there), ulimits at or under the machine's own
// (podman's defaults raise them, which needs CAP_SYS_RESOURCE, absent here), and
// no health check timer (podman runs those from systemd, which is not running).
var containerRun = []string{"--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--health-cmd", "none"}

// TestDeployImage: `make image` builds the linux/amd64 image from the sources;
// `make image-push` pushes it to an Outpost node; the image has the non-root user, entrypoint, volume, health check and version
// labels; `outpost version` runs in it; a node in it (read-only root file system)
// answers /readyz as user 65532, passes its own HEALTHCHECK command and stops
// gracefully on SIGTERM.
func TestDeployImage(t *testing.T) {
	podman := Tool(t, "podman")
	Tool(t, "runc")
	img0 := buildTestImage(t)
	tag, version, list := img0.tag, img0.version, img0.list
	ref := "localhost/outpost@" + list.Manifests[0].Digest

	var images []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Volumes    map[string]any
			Labels     map[string]string
		}
		Healthcheck  struct{ Test []string }
		Architecture string
	}
	if err := jsonOf(MustRun(t, time.Minute, podman, podmanArgs("image", "inspect", ref)...), &images); err != nil || len(images) != 1 {
		t.Fatalf("podman image inspect %s: %v (%d images)", ref, err, len(images))
	}
	img := images[0]
	t.Logf("image %s: %.1f MB, user %s, entrypoint %v, volumes %v", ref, float64(img.Size)/1e6, img.Config.User, img.Config.Entrypoint, img.Config.Volumes)
	for what, bad := range map[string]bool{
		"user 65532:65532, not root":               img.Config.User != "65532:65532",
		"entrypoint /usr/local/bin/outpost":        strings.Join(img.Config.Entrypoint, " ") != "/usr/local/bin/outpost",
		"cmd serve --data /data":                   !strings.HasPrefix(strings.Join(img.Config.Cmd, " "), "serve --data /data"),
		"volume /data":                             img.Config.Volumes["/data"] == nil,
		"label org.opencontainers.image.version":   img.Config.Labels["org.opencontainers.image.version"] != version,
		"label org.opencontainers.image.revision":  len(img.Config.Labels["org.opencontainers.image.revision"]) < 7,
		"health check `outpost healthcheck`":       !strings.Contains(strings.Join(img.Healthcheck.Test, " "), "outpost healthcheck"),
		"architecture amd64":                       img.Architecture != "amd64",
		"a static binary and little else (<80 MB)": img.Size <= 0 || img.Size > 80<<20,
	} {
		if bad {
			t.Errorf("image: want %s; config %+v, size %d", what, img.Config, img.Size)
		}
	}

	// make image-push to an Outpost node: the list and the image arrive as built.
	root := StartNode(t, NodeOptions{})
	dest := root.Host + "/deploy/outpost:" + version
	if out, err := Run(t, 5*time.Minute, "make", "-C", repoRoot(), "image-push", "IMAGE="+tag, "PUSH_TO="+dest, "PUSH_FLAGS=--tls-verify=false"); err != nil {
		t.Fatalf("make image-push to an Outpost node: %v\n%s", err, out)
	}
	// (The pushed digests differ from the local ones: the layers are compressed on the way.)
	var pushed struct {
		Manifests []struct {
			Digest   string
			Platform struct{ Architecture, OS string }
		}
	}
	crane := Tool(t, "crane")
	if err := jsonOf(MustRun(t, time.Minute, crane, "manifest", "--insecure", dest), &pushed); err != nil ||
		len(pushed.Manifests) != 1 || pushed.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("the manifest list at the Outpost node: want one linux/amd64 image, got %+v (%v)", pushed, err)
	}
	var pushedCfg struct {
		Config struct{ Labels map[string]string }
	}
	if err := jsonOf(MustRun(t, time.Minute, crane, "config", "--insecure", root.Host+"/deploy/outpost@"+pushed.Manifests[0].Digest), &pushedCfg); err != nil ||
		pushedCfg.Config.Labels["org.opencontainers.image.version"] != version {
		t.Fatalf("the image at the Outpost node: want version label %s, got %+v (%v)", version, pushedCfg, err)
	}
	var pushedImg struct{ Layers []struct{ Size int64 } }
	if err := jsonOf(MustRun(t, time.Minute, crane, "manifest", "--insecure", root.Host+"/deploy/outpost@"+pushed.Manifests[0].Digest), &pushedImg); err == nil {
		var n int64
		for _, l := range pushedImg.Layers {
			n += l.Size
		}
		t.Logf("pushed to an Outpost node: %d layers, %.1f MB compressed", len(pushedImg.Layers), float64(n)/1e6)
	}

	out := MustRun(t, time.Minute, podman, podmanArgs(append(append([]string{"run", "--rm"}, containerRun...), ref, "version")...)...)
	if !strings.Contains(out, "outpost "+version+" ") || !strings.Contains(out, "linux/amd64") {
		t.Fatalf("outpost version in the image: want %s for linux/amd64, got %q", version, out)
	}

	// A node in the container, on the image's own volume (/data, owned by the
	// user), with a read-only root file system as the Helm chart runs it.
	httpAddr, gwAddr := freeAddr(t), freeAddr(t)
	name := "outpost-imagetest-" + strconv.Itoa(os.Getpid())
	runArgs := append(append([]string{"run", "-d", "--read-only", "--name", name}, containerRun...), ref,
		"serve", "--data", "/data", "--addr", httpAddr, "--gateway-addr", gwAddr, "--log-format", "json")
	MustRun(t, time.Minute, podman, podmanArgs(runArgs...)...)
	t.Cleanup(func() { _, _ = Run(t, time.Minute, podman, podmanArgs("rm", "-f", "-v", name)...) })
	logs := func() string { out, _ := Run(t, time.Minute, podman, podmanArgs("logs", name)...); return out }
	Eventually(t, time.Minute, func() error {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return fmt.Errorf("/readyz of the node in the container: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz of the node in the container: %s", resp.Status)
		}
		return nil
	})
	pid := strings.TrimSpace(MustRun(t, time.Minute, podman, podmanArgs("inspect", "--format", "{{.State.Pid}}", name)...))
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65532\t65532\t65532\t65532\n") {
		t.Errorf("the node in the container does not run as 65532:\n%s", status)
	}
	if out, err := Run(t, time.Minute, podman, podmanArgs("exec", name, "/usr/local/bin/outpost", "healthcheck", "--server", "http://"+httpAddr)...); err != nil {
		t.Errorf("the image's HEALTHCHECK command: %v\n%s", err, out)
	}
	start := time.Now()
	MustRun(t, time.Minute, podman, podmanArgs("stop", "--time", "30", name)...)
	code := strings.TrimSpace(MustRun(t, time.Minute, podman, podmanArgs("inspect", "--format", "{{.State.ExitCode}}", name)...))
	if code != "0" {
		t.Fatalf("after SIGTERM (podman stop) the node exited %s, want 0 (a graceful stop):\n%s", code, logs())
	}
	if l := logs(); !strings.Contains(l, `"msg":"stopped"`) {
		t.Fatalf("the node's log does not say it stopped:\n%s", l)
	}
	t.Logf("graceful stop in the container: %s", time.Since(start).Round(10*time.Millisecond))
}

// manifestList is what `buildah manifest inspect` says of a list.
type manifestList struct {
	Manifests []struct {
		Digest   string
		Platform struct{ Architecture, OS string }
	}
}

// testImage is the linux/amd64 image `make image` builds once per test process,
// as localhost/outpost:test (a later build replaces it and its image).
var testImage builtImage

type builtImage struct {
	once    sync.Once
	tag     string
	version string
	list    manifestList
	err     error
}

func buildTestImage(t *testing.T) *builtImage {
	t.Helper()
	Tool(t, "buildah")
	testImage.once.Do(func() {
		testImage.tag, testImage.version = "localhost/outpost:test", "v0.0.0-imagetest."+strconv.Itoa(os.Getpid())
		start := time.Now()
		out, err := Run(t, 20*time.Minute, "make", "-C", repoRoot(), "image", "PLATFORMS=linux/amd64",
			"IMAGE="+testImage.tag, "VERSION="+testImage.version)
		if err != nil {
			testImage.err = fmt.Errorf("make image: %v\n%s", err, out)
			return
		}
		t.Logf("make image (linux/amd64): %s", time.Since(start).Round(100*time.Millisecond))
		out, err = Run(t, time.Minute, "buildah", "--root", imageStore+"/root", "--runroot", imageStore+"/run", "--storage-driver", "vfs",
			"manifest", "inspect", testImage.tag)
		if err != nil || jsonOf(out, &testImage.list) != nil {
			testImage.err = fmt.Errorf("buildah manifest inspect %s: %v\n%s", testImage.tag, err, out)
			return
		}
		if m := testImage.list.Manifests; len(m) != 1 || m[0].Platform.Architecture != "amd64" || m[0].Platform.OS != "linux" {
			testImage.err = fmt.Errorf("manifest list %s: want one linux/amd64 image, got %+v", testImage.tag, m)
		}
	})
	if testImage.err != nil {
		t.Fatal(testImage.err)
	}
	return &testImage
}
