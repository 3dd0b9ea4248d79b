package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSiteConnectionStringStaysOffTheCommandLine: a site started the README's way
// (a file) has no sync password in its process arguments, which every user of the
// machine can read; the flag that would put it there is refused, an empty one too
// (it used to start a root), each with a Try: line. The environment variable is
// the other way (TestSecondProcessForAnActiveNodeIsRefused starts a site by it).
func TestSiteConnectionStringStaysOffTheCommandLine(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	site := StartChild(t, root, Child{Name: "siteone", Mode: "ReadOnly", Repositories: []string{"app/*"}})
	password := csField(site.opts.ConnectionString, "SyncTokenPassword")
	if len(password) < 16 {
		t.Fatalf("no sync password in the connection string")
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", site.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if bytes.Contains(cmdline, []byte(password)) || !slices.Contains(args, "--connection-string-file") {
		t.Errorf("the site's process arguments: %q; want --connection-string-file and no sync password", args)
	}
	if out := site.Output(); strings.Contains(out, password) {
		t.Errorf("the site logged its sync password")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--connection-string", site.opts.ConnectionString}, "--connection-string: refused, as it puts the node's sync password in every process listing"},
		{[]string{"--connection-string", ""}, `--connection-string "": empty, and refused anyway`},
	} {
		data := t.TempDir()
		args := append([]string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"}, c.args...)
		out, err := Run(t, time.Minute, Binary(t), args...)
		if err == nil || !strings.Contains(out, c.want) || !strings.Contains(out, "Try: ") || !strings.Contains(out, "--connection-string-file") {
			t.Errorf("serve %q: %v\n%s\nwant a refusal with %q and a Try: line", c.args, err, out, c.want)
		}
		if strings.Contains(out, password) {
			t.Errorf("serve %q: the refusal shows the password", c.args)
		}
		if entries, _ := os.ReadDir(data); len(entries) > 0 {
			t.Errorf("serve %q: refused, but wrote %d entries into its data directory", c.args, len(entries))
		}
	}
	empty := filepath.Join(t.TempDir(), "empty.cs")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := Run(t, time.Minute, Binary(t), "serve", "--data", t.TempDir(), "--connection-string-file", empty)
	if err == nil || !strings.Contains(out, "is empty") || !strings.Contains(out, "Try: ") {
		t.Errorf("serve with an empty connection string file: %v\n%s", err, out)
	}
}

// TestNodeUpdateAddsClientTokensAsItsHelpShows runs the help's own example
// against a real root, then the comma and repeated forms, and a typical mistake.
func TestNodeUpdateAddsClientTokensAsItsHelpShows(t *testing.T) {
	root := StartNode(t, NodeOptions{})
	for _, tok := range []string{"lineone", "linetwo", "linethree", "linefour"} {
		root.MustCLI(t, "token", "create", tok, "--repository", "plant/*=pull")
	}
	root.MustCLI(t, "node", "create", "factory1", "--mode", "ReadWrite", "--repository", "plant/*")
	tokens := func() []string {
		var v struct {
			Settings struct{ ClientTokens []string }
		}
		if err := jsonOf(root.MustCLI(t, "node", "show", "factory1"), &v); err != nil {
			t.Fatal(err)
		}
		slices.Sort(v.Settings.ClientTokens)
		return v.Settings.ClientTokens
	}
	root.MustCLI(t, "node", "update", "factory1", "--add-client-tokens", "lineone", "linetwo", "--anonymous-pull=false")
	if got := tokens(); !slices.Equal(got, []string{"lineone", "linetwo"}) {
		t.Errorf("after --add-client-tokens lineone linetwo: %v", got)
	}
	root.MustCLI(t, "node", "update", "factory1", "--add-client-tokens", "linethree,linefour", "--remove-client-tokens", "lineone", "--remove-client-tokens", "linetwo")
	if got := tokens(); !slices.Equal(got, []string{"linefour", "linethree"}) {
		t.Errorf("after the comma and repeated forms: %v", got)
	}
	out, err := root.CLI(t, "node", "update", "--add-client-tokens", "lineone", "factory1")
	if err == nil || !strings.Contains(out, "want one NAME, got 0") || !strings.Contains(out, "Try: outpost node update NAME") {
		t.Errorf("NAME after the list: %v\n%s", err, out)
	}
	out, err = root.CLI(t, "node", "update", "factory1", "--add-client-tokens", "nosuchtoken")
	if err == nil || !strings.Contains(out, "outpost token create nosuchtoken") {
		t.Errorf("an unknown token: %v\n%s", err, out)
	}
}
