package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/hierarchy"
)

// runCLI runs one command line as main does and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// updateRecorder answers node updates like the root's API and records what the
// CLI asked for; only the CLI's parsing is under test here (test/ runs a real root).
func updateRecorder(t *testing.T) (url string, got func() *hierarchy.UpdateRequest) {
	t.Helper()
	var last *hierarchy.UpdateRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req hierarchy.UpdateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		last = &req
		_ = json.NewEncoder(w).Encode(hierarchy.NodeView{})
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() *hierarchy.UpdateRequest { r := last; last = nil; return r }
}

// TestNodeUpdateTakesTokenListsAsItsHelpShows: the help's own example
// (--add-client-tokens line1 line2), the comma form, the repeated flag and a mix,
// with NAME first; NAME after a list is a clear error, not a token.
func TestNodeUpdateTakesTokenListsAsItsHelpShows(t *testing.T) {
	url, got := updateRecorder(t)
	for _, c := range []struct {
		args        []string
		add, remove []string
	}{
		{[]string{"factory1", "--add-client-tokens", "line1", "line2", "--anonymous-pull=false"}, []string{"line1", "line2"}, nil},
		{[]string{"factory1", "--add-client-tokens", "line1,line2"}, []string{"line1", "line2"}, nil},
		{[]string{"factory1", "--add-client-tokens=line1,line2", "--add-client-tokens", "line3"}, []string{"line1", "line2", "line3"}, nil},
		{[]string{"factory1", "--add-client-tokens", "a", "b,c", "--remove-client-tokens", "d", "e"}, []string{"a", "b", "c"}, []string{"d", "e"}},
		{[]string{"--remove-client-tokens", "d", "--log-level", "debug", "factory1"}, nil, []string{"d"}},
	} {
		args := append([]string{"node", "update"}, c.args...)
		code, _, stderr := runCLI(t, append(args, "--server", url, "--token", "x")...)
		req := got()
		if code != 0 || req == nil {
			t.Errorf("%v: exit %d, %s", c.args, code, stderr)
			continue
		}
		if !slices.Equal(req.AddClientTokens, c.add) || !slices.Equal(req.RemoveClientTokens, c.remove) {
			t.Errorf("%v: asked to add %v remove %v, want %v and %v", c.args, req.AddClientTokens, req.RemoveClientTokens, c.add, c.remove)
		}
	}
	for _, c := range []struct {
		args      []string
		err, hint string
	}{
		{[]string{"--add-client-tokens", "a", "b", "factory1"}, "want one NAME, got 0", "NAME first"},
		{[]string{"factory1", "--add-client-tokens"}, "--add-client-tokens: needs at least one name", "outpost node update --help"},
		{[]string{"factory1", "--remove-client-tokens", "--log-level", "debug"}, "--remove-client-tokens: needs at least one name", "outpost node update --help"},
		{[]string{"factory1", "--no-such-flag"}, "unknown flag: --no-such-flag", "outpost node update --help"},
	} {
		args := append([]string{"node", "update"}, c.args...)
		code, _, stderr := runCLI(t, append(args, "--server", url, "--token", "x")...)
		if code == 0 || got() != nil || !strings.Contains(stderr, c.err) || !strings.Contains(stderr, "Try: ") || !strings.Contains(stderr, c.hint) {
			t.Errorf("%v: exit %d, stderr %q; want a refusal saying %q and a Try: with %q", c.args, code, stderr, c.err, c.hint)
		}
	}
	if code, stdout, _ := runCLI(t, "node", "update", "--help"); code != 0 || !strings.Contains(stdout, "--add-client-tokens line1 line2") {
		t.Errorf("node update --help: exit %d\n%s", code, stdout)
	}
}

// TestTypicalMistakesPrintATryHint: an error that knows its remedy prints it as
// "Try: ..." under the error.
func TestTypicalMistakesPrintATryHint(t *testing.T) {
	refused := func() string { // a port with nothing listening
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	unauthorized := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"this endpoint needs the admin token"}`))
	}))
	defer unauthorized.Close()
	for _, c := range []struct {
		args      []string
		err, hint string
		code      int
	}{
		{[]string{"node", "show"}, "accepts 1 arg(s), received 0", "outpost node show --help", exitUsage},
		{[]string{"node", "create", "a", "b"}, "accepts 1 arg(s), received 2", "outpost node create --help", exitUsage},
		{[]string{"node", "list", "--server", refused}, "connection refused", "is `outpost serve` running there?", exitUnreachable},
		{[]string{"node", "list", "--server", unauthorized.URL, "--token", ""}, "needs the admin token", "--token or OUTPOST_TOKEN", exitAuth},
		{[]string{"serve", "--connection-string", "x"}, "sync password in every process listing", "--connection-string-file", exitUsage},
		{[]string{"events", "--bogus"}, "unknown flag: --bogus", "outpost events --help", exitUsage},
		{[]string{"nodes", "list"}, `unknown command "nodes"`, "outpost --help", exitUsage},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, "Error: ") || !strings.Contains(stderr, c.err) ||
			!strings.Contains(stderr, "\nTry: ") || !strings.Contains(stderr, c.hint) {
			t.Errorf("outpost %v: exit %d, stderr:\n%s\nwant %q and a Try: line with %q", c.args, code, stderr, c.err, c.hint)
		}
	}
}

func TestExpandListFlags(t *testing.T) {
	names := []string{"add-client-tokens"}
	for _, c := range []struct{ in, want []string }{
		{[]string{"n", "--add-client-tokens", "a", "b"}, []string{"n", "--add-client-tokens=a", "--add-client-tokens=b"}},
		{[]string{"--add-client-tokens", "a", "--x", "b"}, []string{"--add-client-tokens=a", "--x", "b"}},
		{[]string{"--add-client-tokens=a,b", "c"}, []string{"--add-client-tokens=a,b", "c"}},
		{[]string{"--add-client-tokens", "a", "--", "--add-client-tokens", "b"}, []string{"--add-client-tokens=a", "--", "--add-client-tokens", "b"}},
		{[]string{"--remove-client-tokens", "a", "b"}, []string{"--remove-client-tokens", "a", "b"}},
	} {
		if got, err := expandListFlags(c.in, names...); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("expandListFlags(%q) = %q %v, want %q", c.in, got, err, c.want)
		}
	}
}

// TestServeTakesTheConnectionStringFromAFileOrTheEnvironment: never from the
// command line (refused, with an empty value too: that would start a root), one
// source at a time, and a source that is given but empty is an error. Each case
// is refused before anything is written.
func TestServeTakesTheConnectionStringFromAFileOrTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "ParentRegistryEndpoint=127.0.0.1:1;ParentGatewayEndpoint=127.0.0.1:1;NodeName=siteone;SyncTokenName=siteone-sync;SyncTokenPassword=secret"
	goodFile, emptyFile := file("good.cs", good+"\n"), file("empty.cs", " \n")
	for _, c := range []struct {
		env  *string
		args []string
		want string
	}{
		{nil, []string{"--connection-string", ""}, `--connection-string "": empty, and refused anyway`},
		{nil, []string{"--connection-string=" + good}, "--connection-string: refused"},
		{nil, []string{"--connection-string-file", emptyFile}, "connection string file " + emptyFile + " is empty"},
		{nil, []string{"--connection-string-file", ""}, `--connection-string-file "": no file named`},
		{nil, []string{"--connection-string-file", filepath.Join(dir, "missing.cs")}, "no such file"},
		{ptr(""), nil, "OUTPOST_CONNECTION_STRING is set but empty"},
		{ptr("  "), nil, "OUTPOST_CONNECTION_STRING is set but empty"},
		{ptr(good), []string{"--connection-string-file", goodFile}, "given 2 ways (--connection-string-file, OUTPOST_CONNECTION_STRING)"},
		{ptr("NodeName=x"), nil, "connection string"}, // parsed, and refused for what it lacks
	} {
		if c.env != nil {
			t.Setenv(envConnectionString, *c.env)
		} else {
			os.Unsetenv(envConnectionString)
		}
		err := serveErr(t, append([]string{"--data", data}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v with env %v: %v, want an error with %q", c.args, c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("serve %v: the error shows the password: %v", c.args, err)
		}
	}
	os.Unsetenv(envConnectionString)
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("a refused connection string created the data directory: %v", err)
	}
	// The file and the variable both reach the node: read here, as runServe gets it.
	t.Setenv(envConnectionString, good)
	if cs, err := connectionString(defaultServeOptions()); err != nil || cs != good {
		t.Errorf("from the environment: %q %v", cs, err)
	}
	os.Unsetenv(envConnectionString)
	opts := defaultServeOptions()
	opts.ConnectionStringFile = goodFile
	if cs, err := connectionString(opts); err != nil || cs != good {
		t.Errorf("from a file: %q %v", cs, err)
	}
}

func ptr[T any](v T) *T { return &v }
