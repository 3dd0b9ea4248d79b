package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// TestServeFromEnvironmentAndCLIExitCodes: `outpost serve` started with every
// setting from OUTPOST_* variables (and none from flags) runs as they say (its
// name, ReadOnly mode, addresses, data directory, log format), and the CLI against
// that real node exits with the documented code for each kind of failure.
func TestServeFromEnvironmentAndCLIExitCodes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(Binary(t), "serve")
	cmd.Env = append(os.Environ(), "OUTPOST_DATA="+data, "OUTPOST_ADDR=127.0.0.1:0", "OUTPOST_GATEWAY_ADDR=127.0.0.1:0",
		"OUTPOST_NAME=envroot1", "OUTPOST_MODE=ReadOnly", "OUTPOST_LOG_FORMAT=json", "OUTPOST_MESSAGE_TTL=P3D",
		"OUTPOST_ADMIN_TOKEN="+AdminToken)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	type serving struct{ Msg, Node, Mode, HTTP, Data string }
	found := make(chan serving, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec serving
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
				found <- rec
			}
		}
	}()
	var s serving
	select {
	case s = <-found:
	case <-time.After(60 * time.Second):
		t.Fatal("serve started from the environment: no JSON `serving` line in 60 s (OUTPOST_LOG_FORMAT not read?)")
	}
	if s.Node != "envroot1" || s.Mode != "ReadOnly" || s.Data != data || !strings.HasPrefix(s.HTTP, "127.0.0.1:") {
		t.Errorf("serving from the environment as %+v; want node envroot1, ReadOnly, data %s, 127.0.0.1", s, data)
	}
	if _, err := os.Stat(filepath.Join(data, "nats")); err != nil {
		t.Errorf("OUTPOST_DATA not used: %v", err)
	}
	url := "http://" + s.HTTP
	SignIn(t, s.HTTP, "admin", AdminToken)
	n := &Node{Host: s.HTTP, URL: url}
	if err := remote.Write(mustRef(t, n, "env/app:1"), content.Image(t, 1), Auth); err == nil || !strings.Contains(err.Error(), "UNSUPPORTED") {
		t.Errorf("a push to a node OUTPOST_MODE made ReadOnly: %v, want UNSUPPORTED", err)
	}

	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	cli := func(token string, args ...string) (string, int) {
		t.Helper()
		out, err := RunEnv(t, time.Minute, []string{"OUTPOST_SERVER=" + url, "OUTPOST_TOKEN=" + token}, Binary(t), args...)
		var exit *exec.ExitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &exit):
			return out, exit.ExitCode()
		}
		t.Fatalf("outpost %v: %v", args, err)
		return "", -1
	}
	out, code := cli(AdminToken, "node", "create", "shipone1", "--repository", "env/*")
	if code != 0 {
		t.Fatalf("node create: exit %d\n%s", code, out)
	}
	for _, c := range []struct {
		token string
		args  []string
		code  int
		say   string
	}{
		{AdminToken, []string{"node", "show", "shipone1", "-o", "table"}, 0, "shipone1"},
		{AdminToken, []string{"node", "create", "ship-two", "--repository", "env/*"}, 2, "5 to 50 letters and digits"},
		{AdminToken, []string{"node", "list", "--output", "xml"}, 2, "want table, json or yaml"},
		{"wrong", []string{"node", "list"}, 3, "admin token"},
		{AdminToken, []string{"node", "show", "nosuchnode"}, 4, "nosuchnode"},
		{AdminToken, []string{"node", "create", "shipone1", "--repository", "env/*"}, 6, "shipone1"},
		{AdminToken, []string{"node", "list", "--server", closed}, 5, "connection refused"},
		{AdminToken, []string{"sync", "now"}, 2, "no parent link"},
	} {
		out, code := cli(c.token, c.args...)
		if code != c.code || !strings.Contains(out, c.say) {
			t.Errorf("outpost %v: exit %d\n%s\nwant exit %d saying %q", c.args, code, out, c.code, c.say)
		}
	}
	// A node that never reported shows no times it does not have.
	if out, code = cli(AdminToken, "node", "show", "shipone1", "-o", "json"); code != 0 || strings.Contains(out, "0001-01-01") {
		t.Errorf("node show -o json of a node that never reported: exit %d, a zero time printed:\n%s", code, out)
	}
	out, code = cli(AdminToken, "node", "show", "shipone1", "-o", "yaml")
	var v struct {
		Name     string `yaml:"name"`
		Settings struct {
			Mode       string `yaml:"mode"`
			MessageTTL string `yaml:"messageTtl"`
		} `yaml:"settings"`
	}
	if code != 0 || yaml.Unmarshal([]byte(out), &v) != nil || v.Name != "shipone1" || v.Settings.Mode != "ReadOnly" {
		t.Errorf("node show -o yaml: exit %d, %+v\n%s", code, v, out)
	}
}
