package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/registry"
)

// TestGCScheduleErrorsSayWhatIsWrong: serve refuses a bad --gc-schedule before it
// starts anything, naming the setting, what is wrong and an example.
func TestGCScheduleErrorsSayWhatIsWrong(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{"0 3 * *", `gc-schedule "0 3 * *": has 4 fields; want a 5-field cron expression`},
		{"@daily", `gc-schedule "@daily": descriptors such as @every, @daily or @hourly are not accepted`},
		{"0 0 30 2 *", `gc-schedule "0 0 30 2 *": never fires`},
		{"61 3 * * *", `gc-schedule "61 3 * * *": end of range (61) above maximum (59)`},
	} {
		code, _, stderr := runCLI(t, "serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--gc-schedule", c.spec)
		if code != exitUsage || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, `Try: --gc-schedule "0 3 * * *"`) {
			t.Errorf("serve --gc-schedule %q: exit %d\n%s\nwant exit 2 (usage) saying %q and an example", c.spec, code, stderr, c.want)
		}
		if strings.Contains(stderr, "sync schedule") {
			t.Errorf("serve --gc-schedule %q speaks of a sync schedule:\n%s", c.spec, stderr)
		}
	}
	for _, spec := range []string{"", "  ", "0 3 * * *", "*/30 * * * 1-5"} {
		cfg, err := parseGCSettings(serveOptions{GCSchedule: spec}, time.Now)
		if err != nil {
			t.Errorf("--gc-schedule %q: %v", spec, err)
			continue
		}
		if none := cfg.Schedule.Next(time.Now()).IsZero(); none != (strings.TrimSpace(spec) == "") {
			t.Errorf("--gc-schedule %q: scheduled %v", spec, !none)
		}
	}
}

// gcNode answers /outpost/v1/gc as a node would, with what the test sets; the real
// node's answers are in test/gc_test.go.
func gcNode(t *testing.T, status int, ans registry.GCAnswer) (url string, asked func() string) {
	t.Helper()
	var last string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last = r.Method + " " + r.URL.RequestURI()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte("\n\n")) // a long collection's keep-alive lines
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() string { return last }
}

// TestGCCommandPrintsAndExits: what `outpost gc` asks for, prints and exits with.
func TestGCCommandPrintsAndExits(t *testing.T) {
	start := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	rep := &registry.GCReport{Started: start, Finished: start.Add(1500 * time.Millisecond), Repositories: 3, Manifests: 9,
		Referenced: 30, Blobs: 4, Bytes: 3 << 20, LayerLinks: 3, ReferrerEntries: 1, Parts: 1, PartBytes: 10, Recent: 2, RecentBytes: 2048}
	url, asked := gcNode(t, http.StatusOK, registry.GCAnswer{Report: rep, Next: start.Add(24 * time.Hour)})
	code, out, stderr := runCLI(t, "gc", "--server", url, "--token", "x")
	if code != 0 || asked() != "POST /outpost/v1/gc" {
		t.Fatalf("outpost gc: exit %d, asked %q\n%s", code, asked(), stderr)
	}
	for _, want := range []string{"removed 4 blobs (3145728 bytes, 3.0 MiB), 3 repository links, the referrers index entries of 1 deleted manifests, 1 stale parts (10 bytes): 3145738 bytes, 3.0 MiB reclaimed in 1.5s",
		"kept 30 referenced blobs of 9 manifests in 3 repositories, and 2 unreferenced blobs (2048 bytes, 2.0 KiB)",
		"next scheduled collection: 2026-11-28T03:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("outpost gc printed:\n%s\nwant %q", out, want)
		}
	}
	rep.DryRun = true
	if code, out, _ := runCLI(t, "gc", "--dry-run", "--server", url); code != 0 || asked() != "POST /outpost/v1/gc?dry-run=true" || !strings.HasPrefix(out, "dry run, nothing removed: would remove 4 blobs") {
		t.Errorf("outpost gc --dry-run: exit %d, asked %q\n%s", code, asked(), out)
	}
	if code, out, _ := runCLI(t, "gc", "--last", "--output", "json", "--server", url); code != 0 || asked() != "GET /outpost/v1/gc" || !strings.Contains(out, `"blobs": 4`) {
		t.Errorf("outpost gc --last --output json: exit %d, asked %q\n%s", code, asked(), out)
	}

	// A collection that stopped early: its figures, and exit 1 with the reason.
	failed := *rep
	failed.DryRun, failed.Error = false, "sweep blobs: remove blob sha256:ab: permission denied"
	url, _ = gcNode(t, http.StatusOK, registry.GCAnswer{Report: &failed, Error: "gc: " + failed.Error})
	code, out, stderr = runCLI(t, "gc", "--server", url)
	if code != 1 || !strings.Contains(out, "stopped early: sweep blobs") || !strings.Contains(stderr, "Error: gc: gc: sweep blobs: remove blob sha256:ab: permission denied") {
		t.Errorf("a collection that failed: exit %d\n%s%s", code, out, stderr)
	}
	// Another collection running: 409, exit 6 (conflict) with the node's words.
	url, _ = gcNode(t, http.StatusConflict, registry.GCAnswer{Error: "a garbage collection is already running at node root"})
	if code, _, stderr := runCLI(t, "gc", "--server", url); code != exitConflict || !strings.Contains(stderr, "already running") {
		t.Errorf("a collection running: exit %d\n%s", code, stderr)
	}
	// Usage mistakes ask the node nothing and exit 2.
	url, asked = gcNode(t, http.StatusOK, registry.GCAnswer{Report: rep})
	for _, args := range [][]string{{"gc", "--output", "xml"}, {"gc", "--last", "--dry-run"}, {"gc", "now"}} {
		code, _, stderr := runCLI(t, append(args, "--server", url)...)
		if code != exitUsage || !strings.Contains(stderr, "Try:") || asked() != "" {
			t.Errorf("outpost %v: exit %d, asked %q\n%s", args, code, asked(), stderr)
		}
	}
	var none strings.Builder
	printGC(&none, registry.GCAnswer{})
	if !strings.Contains(none.String(), "no garbage collection since the node started") {
		t.Errorf("without a report printed %q", none.String())
	}
}
