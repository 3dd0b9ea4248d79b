package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// TestVersionNamesVersionCommitAndGo: `outpost version`, its JSON and `--version`
// say the same thing; -ldflags values win over the build info.
func TestVersionNamesVersionCommitAndGo(t *testing.T) {
	old, oldCommit := version, commit
	version, commit = "v1.2.3", "0123456789abcdef"
	t.Cleanup(func() { version, commit = old, oldCommit })
	want := "outpost v1.2.3 (commit 0123456789abcdef, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, out, errOut := runCLI(t, args...); code != 0 || out != want {
			t.Errorf("outpost %s: exit %d, %q %s; want %q", strings.Join(args, " "), code, out, errOut, want)
		}
	}
	code, out, _ := runCLI(t, "version", "--output", "json")
	var v versionInfo
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version != "v1.2.3" || v.GoVersion != runtime.Version() {
		t.Errorf("outpost version --output json: exit %d, %q", code, out)
	}
	if code, _, errOut := runCLI(t, "version", "--output", "yaml"); code == 0 || !strings.Contains(errOut, `--output "yaml": want text or json`) {
		t.Errorf("outpost version --output yaml: want a refusal, got exit %d %q", code, errOut)
	}
}

// TestHealthcheckFollowsHealthz: exit 0 on 200 from /healthz, 1 naming the
// status otherwise (the container's HEALTHCHECK reads only the exit code).
func TestHealthcheckFollowsHealthz(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if code, _, errOut := runCLI(t, "healthcheck", "--server", srv.URL); code != 0 {
		t.Fatalf("healthcheck of a healthy node: exit %d: %s", code, errOut)
	}
	status = http.StatusServiceUnavailable
	if code, _, errOut := runCLI(t, "healthcheck", "--server", srv.URL); code != 1 || !strings.Contains(errOut, "503") {
		t.Fatalf("healthcheck of a node whose /healthz fails: exit %d: %s", code, errOut)
	}
}
