package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/node"
	"github.com/outpost-edge/outpost/registry"
)

// fakeAPI answers the node API's paths with fixed resources; only the CLI's
// printing and error handling are under test here (test/ runs real nodes).
func fakeAPI(t *testing.T) string {
	t.Helper()
	created := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	nodeView := hierarchy.NodeView{Name: "factory1", Parent: "root", Depth: 1, Created: created, Updated: created,
		Settings: hierarchy.Settings{Mode: hierarchy.ReadWrite, Repositories: hierarchy.Scope{"plant/*"}},
		Status:   &hierarchy.Status{Node: "factory1", State: hierarchy.Online, Links: []hierarchy.LinkStatus{{Link: "downstream", PendingMessages: 7}}}}
	tokenView := hierarchy.TokenView{Name: "ci", Enabled: true, Nodes: []string{"factory1"}}
	ev := events.Event{ID: "e1", Action: events.ActionPush, Repository: "plant/app", Tag: "v1", Digest: "sha256:" + strings.Repeat("a", 64), Origin: "root", Time: created}
	answers := map[string]any{
		"GET /outpost/v1/nodes":               []hierarchy.NodeView{nodeView},
		"GET /outpost/v1/nodes/factory1":      nodeView,
		"POST /outpost/v1/nodes":              nodeView,
		"PATCH /outpost/v1/nodes/factory1":    nodeView,
		"GET /outpost/v1/tokens":              []hierarchy.TokenView{tokenView},
		"GET /outpost/v1/tokens/ci":           tokenView,
		"POST /outpost/v1/tokens":             tokenView,
		"DELETE /outpost/v1/repositories/a/b": nil,
		"POST /outpost/v1/gc":                 registry.GCAnswer{Report: &registry.GCReport{Blobs: 3, Bytes: 3000, Started: created, Finished: created.Add(time.Second)}},
		"POST /outpost/v1/scrub":              node.ScrubAnswer{},
		"POST /outpost/v1/sync":               node.SyncProgress{Node: "factory1", Parent: "root", WindowOpen: true, Directions: []node.DirectionProgress{{Direction: "downstream"}}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/outpost/v1/events" {
			_ = json.NewEncoder(w).Encode(ev)
			return
		}
		a, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if a != nil {
			_ = json.NewEncoder(w).Encode(a)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestEveryResourceCommandPrintsTableJSONAndYAML: each command that prints a
// resource takes --output table, json and yaml; json and yaml say the same thing
// (the API's field names), and table is the people's form.
func TestEveryResourceCommandPrintsTableJSONAndYAML(t *testing.T) {
	url := fakeAPI(t)
	for _, c := range []struct {
		args  []string
		table string // in the table form
		field string // a JSON field the resource has
	}{
		{[]string{"node", "list"}, "factory1  root    ReadWrite  Online", "name"},
		{[]string{"node", "show", "factory1"}, "factory1  root    ReadWrite  Online", "settings"},
		{[]string{"node", "create", "factory1", "--mode", "ReadWrite", "--repository", "plant/*"}, "NAME", "name"},
		{[]string{"node", "update", "factory1", "--log-level", "debug"}, "factory1", "parent"},
		{[]string{"token", "list"}, "ci    true", "enabled"},
		{[]string{"token", "show", "ci"}, "enabled:", "nodes"},
		{[]string{"token", "create", "ci", "--repository", "plant/*=pull"}, "name:", "name"},
		{[]string{"repository", "delete", "a/b"}, "deleted repository a/b", "deleted"},
		{[]string{"gc"}, "removed 3 blobs", "report"},
		{[]string{"scrub"}, "no scrub since the node started", "quarantined"},
		{[]string{"events"}, "plant/app:v1@sha256:", "action"},
		{[]string{"sync", "now"}, "syncing factory1 with root: 0 waiting downstream", "directions"},
	} {
		name := strings.Join(c.args, " ")
		base := append(c.args, "--server", url, "--token", "x")
		code, table, stderr := runCLI(t, append(base, "--output", "table")...)
		if code != 0 || !strings.Contains(table, c.table) {
			t.Errorf("%s --output table: exit %d, %q (stderr %q), want %q in it", name, code, table, stderr, c.table)
		}
		code, js, stderr := runCLI(t, append(base, "-o", "json")...)
		var fromJSON any
		if code != 0 || json.Unmarshal([]byte(js), &fromJSON) != nil {
			t.Errorf("%s -o json: exit %d, %q (stderr %q)", name, code, js, stderr)
			continue
		}
		code, ym, stderr := runCLI(t, append(base, "--output=yaml")...)
		var fromYAML any
		if c.args[0] == "events" {
			ym = strings.TrimPrefix(ym, "---\n")
		}
		if code != 0 || yaml.Unmarshal([]byte(ym), &fromYAML) != nil {
			t.Errorf("%s --output yaml: exit %d, %q (stderr %q)", name, code, ym, stderr)
			continue
		}
		if !reflect.DeepEqual(normalize(fromJSON), normalize(fromYAML)) {
			t.Errorf("%s: yaml and json differ:\n%s\n%s", name, ym, js)
		}
		if !strings.Contains(js, `"`+c.field+`"`) || !strings.Contains(ym, c.field+":") {
			t.Errorf("%s: field %q missing:\n%s\n%s", name, c.field, js, ym)
		}
	}
}

// normalize makes decoded JSON and YAML comparable (numbers, time strings).
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// TestExitCodesTellFailuresApart: one classification point maps each kind of
// failure to its documented code, and `outpost --help` documents them.
func TestExitCodesTellFailuresApart(t *testing.T) {
	status := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"node", "list", "--server", status(200, "[]")}, exitOK, ""},
		{[]string{"--help"}, exitOK, ""},
		{[]string{"node", "list", "--output", "xml"}, exitUsage, `--output "xml": want table, json or yaml`},
		{[]string{"node", "show"}, exitUsage, "accepts 1 arg(s), received 0"},
		{[]string{"node", "list", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"nodes"}, exitUsage, `unknown command "nodes"`},
		{[]string{"node", "create", "x", "--sync-window", "3 hours"}, exitUsage, "--sync-window"},
		{[]string{"node", "create", "x1", "--server", status(400, `{"error":"node name \"x1\": 5 to 50 letters and digits"}`)}, exitUsage, "5 to 50 letters"},
		{[]string{"node", "list", "--server", status(421, `{"error":"node management is at the root only"}`)}, exitUsage, "at the root only"},
		{[]string{"node", "list", "--server", status(401, `{"error":"the management API needs the admin token"}`)}, exitAuth, "needs the admin token"},
		{[]string{"repository", "delete", "a/b", "--server", status(403, `{"errors":[{"code":"DENIED","message":"no delete"}]}`)}, exitAuth, "DENIED: no delete"},
		{[]string{"node", "show", "nosuch", "--server", status(404, `{"error":"node \"nosuch\" not found"}`)}, exitNotFound, "not found"},
		{[]string{"node", "create", "factory1", "--server", status(409, `{"error":"node factory1 exists"}`)}, exitConflict, "exists"},
		{[]string{"gc", "--server", status(409, `{"error":"a garbage collection is running"}`)}, exitConflict, "running"},
		{[]string{"node", "list", "--server", status(500, `{"error":"store: boom"}`)}, exitFailure, "boom"},
		{[]string{"node", "list", "--server", status(503, `node x is starting`)}, exitUnreachable, "503"},
		{[]string{"node", "list", "--server", refused}, exitUnreachable, "connection refused"},
	} {
		code, _, stderr := runCLI(t, append(c.args, "--token", "x")...)
		if c.args[0] == "--help" {
			code, _, stderr = runCLI(t, c.args...)
		}
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("outpost %v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
	// serve: another process holds the data directory (here the test holds its
	// lock, as a running serve does), or another process is active for the node.
	data := t.TempDir()
	lock, err := os.OpenFile(filepath.Join(data, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "serve", "--data", data, "--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"); code != exitConflict || !strings.Contains(stderr, "is in use by") {
		t.Errorf("serve on a data directory in use: exit %d %s", code, stderr)
	}
	if code := exitCode(fmt.Errorf("activate: %w", hierarchy.ErrAlreadyActivated)); code != exitConflict {
		t.Errorf("ALREADY_ACTIVATED: exit %d", code)
	}
	_, help, _ := runCLI(t, "--help")
	for code := range 7 {
		if !strings.Contains(help, fmt.Sprintf("\n  %d  ", code)) {
			t.Errorf("outpost --help does not document exit code %d:\n%s", code, help)
		}
	}
}

// TestEveryServeFlagHasAnEnvironmentVariable: each serve flag is read from
// OUTPOST_<FLAG>, and a flag wins over its variable, the variable over the config
// file, the file over the default.
func TestEveryServeFlagHasAnEnvironmentVariable(t *testing.T) {
	var got serveOptions
	runNode = func(_ context.Context, o serveOptions) error { got = o; return nil }
	t.Cleanup(func() { runNode = runServe })
	serve := func(args ...string) serveOptions {
		t.Helper()
		got = serveOptions{}
		if code, _, stderr := runCLI(t, append([]string{"serve"}, args...)...); code != 0 {
			t.Fatalf("serve %v: exit %d %s", args, code, stderr)
		}
		return got
	}
	var flags []string
	newServeCmd().Flags().VisitAll(func(f *pflag.Flag) {
		if !noEnv[f.Name] && f.Name != "config" {
			flags = append(flags, f.Name)
		}
	})
	if len(flags) < 20 {
		t.Fatalf("found %d serve flags", len(flags))
	}
	for _, flag := range flags {
		if flag == "connection-string-file" {
			continue // checked below: it must name a real file
		}
		t.Setenv(envName(flag), "from-env-"+flag)
		o := serve()
		if v := *o.fields()[flag]; v != "from-env-"+flag {
			t.Errorf("%s=%q: serve's %s is %q", envName(flag), "from-env-"+flag, flag, v)
		}
		os.Unsetenv(envName(flag))
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(config, []byte("log-level: warn\nname: fromfile1\naddr: 127.0.0.1:7000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OUTPOST_CONFIG", config)
	t.Setenv("OUTPOST_NAME", "fromenv1")
	t.Setenv("OUTPOST_ADDR", "127.0.0.1:7001")
	o := serve("--addr", "127.0.0.1:7002")
	if o.LogLevel != "warn" || o.Name != "fromenv1" || o.Addr != "127.0.0.1:7002" || o.Data != defaultServeOptions().Data {
		t.Errorf("file, variable, flag, default: log-level %q name %q addr %q data %q; want warn, fromenv1, 127.0.0.1:7002, ./data",
			o.LogLevel, o.Name, o.Addr, o.Data)
	}
	cs := filepath.Join(dir, "site.cs")
	if err := os.WriteFile(cs, []byte("NodeName=sitea\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OUTPOST_CONNECTION_STRING_FILE", cs)
	if o := serve(); o.ConnectionString != "NodeName=sitea" {
		t.Errorf("OUTPOST_CONNECTION_STRING_FILE: connection string %q", o.ConnectionString)
	}
	t.Setenv("OUTPOST_CONNECTION_STRING_FILE", "")
	if code, _, stderr := runCLI(t, "serve"); code != exitUsage || !strings.Contains(stderr, "OUTPOST_CONNECTION_STRING_FILE is set but empty") {
		t.Errorf("an empty OUTPOST_CONNECTION_STRING_FILE: exit %d %s", code, stderr)
	}
	if _, help, _ := runCLI(t, "serve", "--help"); !strings.Contains(help, "(env OUTPOST_GATEWAY_ADDR)") || !strings.Contains(help, "A flag wins over its variable") {
		t.Errorf("serve --help does not name the variables:\n%s", help)
	}
}

// TestSyncNowWaitShowsProgressThenWhatMoved: --wait polls the node's progress,
// prints items, bytes, rate and an estimate on stderr until nothing waits, then
// what moved; --output json prints the summary for scripts.
func TestSyncNowWaitShowsProgressThenWhatMoved(t *testing.T) {
	var mu sync.Mutex
	step := 0
	// The node's progress at each request: 4 waiting, then 2, then none.
	states := []struct{ pending, applied, moved uint64 }{{4, 10, 1000}, {2, 12, 1000 + 3<<20}, {0, 14, 1000 + 6<<20}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/outpost/v1/sync" || r.Header.Get("Authorization") != "Bearer op" {
			http.Error(w, `{"error":"no"}`, http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			step = 0
		}
		s := states[min(step, len(states)-1)]
		step++
		_ = json.NewEncoder(w).Encode(node.SyncProgress{Node: "factory1", Parent: "root", WindowOpen: true, Time: time.Now(),
			Directions: []node.DirectionProgress{
				{Direction: "downstream", PendingMessages: s.pending, AppliedMessages: s.applied, MovedBytes: s.moved},
				{Direction: "upstream", AppliedMessages: 5},
			}})
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, "sync", "now", "--wait", "--interval", "50ms", "--server", srv.URL, "--token", "op")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "2 items, 3.0 MiB moved (") || !strings.Contains(lines[0], "MiB/s); 2 waiting downstream, 0 waiting upstream, about ") ||
		!strings.Contains(lines[1], "4 items, 6.0 MiB moved") {
		t.Errorf("progress lines:\n%s", stderr)
	}
	if !strings.Contains(stdout, "factory1 synced with root in ") || !strings.Contains(stdout, ": 4 items, 6.0 MiB moved, 0 copy errors") {
		t.Errorf("summary: %q", stdout)
	}
	code, stdout, _ = runCLI(t, "sync", "now", "--wait", "--interval", "50ms", "--server", srv.URL, "--token", "op", "-o", "json")
	var sum syncSummary
	if code != 0 || json.Unmarshal([]byte(stdout), &sum) != nil || sum.Items != 4 || sum.Bytes != 6<<20 || sum.Waiting != 0 {
		t.Errorf("--output json: exit %d %q", code, stdout)
	}
	if code, _, stderr := runCLI(t, "sync", "now", "--server", srv.URL, "--token", "wrong"); code != exitAuth {
		t.Errorf("a wrong operator token: exit %d %s", code, stderr)
	}
}
