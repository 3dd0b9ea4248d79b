package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// deployDir is the repository's deploy/ folder.
func deployDir(parts ...string) string {
	return filepath.Join(append([]string{repoRoot(), "deploy"}, parts...)...)
}

// TestDeploySystemdVerify: Debian's `systemd-analyze verify` finds nothing to say
// about deploy/systemd/outpost.service, installed with its binary in a root
// directory of its own (the host's system units beside it).
func TestDeploySystemdVerify(t *testing.T) {
	analyze := Tool(t, "systemd-analyze")
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unit, err := os.ReadFile(deployDir("systemd", "outpost.service"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/local/bin/outpost"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/outpost.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	// The host's units, copied (their absolute symlinks resolve inside root), and
	// Debian's merged /lib.
	MustRun(t, time.Minute, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/"))
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on an unknown key or section (a warning): any line it prints
	// is a finding.
	out, err := Run(t, time.Minute, analyze, "verify", "--root="+root, "/etc/systemd/system/outpost.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify outpost.service: %v\n%s", err, out)
	}
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=outpost", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n", "Restart=on-failure", "KillSignal=SIGTERM", "EnvironmentFile="} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("outpost.service: no %q", strings.TrimSpace(want))
		}
	}
}

// systemdUnit is what the test needs from a unit's [Service] section.
type systemdUnit struct {
	ExecStart       []string
	EnvironmentFile string
	StopTimeout     time.Duration
}

func readUnit(t *testing.T, path string) systemdUnit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var u systemdUnit
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		switch {
		case !ok:
		case k == "ExecStart":
			u.ExecStart = strings.Fields(v)
		case k == "EnvironmentFile":
			u.EnvironmentFile = v
		case k == "TimeoutStopSec":
			if u.StopTimeout, err = time.ParseDuration(v + "s"); err != nil {
				t.Fatalf("TimeoutStopSec=%s: %v", v, err)
			}
		}
	}
	if len(u.ExecStart) == 0 || u.EnvironmentFile == "" || u.StopTimeout == 0 {
		t.Fatalf("%s: want ExecStart, EnvironmentFile and TimeoutStopSec, got %+v", path, u)
	}
	return u
}

// systemdEnv reads an environment file the way systemd does for EnvironmentFile=:
// KEY=VALUE lines, '#' and ';' comments, blank lines, optional quotes around the
// value. Only these variables reach the process.
func systemdEnv(t *testing.T, data []byte) []string {
	t.Helper()
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("environment file line %q: not KEY=VALUE (systemd ignores it)", line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, strings.TrimSpace(k)+"="+v)
	}
	return env
}

// TestDeploySystemdSite: the unit's ExecStart, with its environment file as
// shipped and as an operator fills it in, run as systemd runs it (nothing but the
// file's variables in the environment). As shipped, the empty connection string
// is refused rather than starting a root; filled in with `node get-settings`, the
// site comes up connected to its root, and SIGTERM (the unit's KillSignal) stops
// it cleanly within TimeoutStopSec.
func TestDeploySystemdSite(t *testing.T) {
	unit := readUnit(t, deployDir("systemd", "outpost.service"))
	envExample, err := os.ReadFile(deployDir("systemd", "outpost.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	cfgExample, err := os.ReadFile(deployDir("systemd", "outpost.yaml.example"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "var-lib-outpost")
	httpAddr, gwAddr := freeAddr(t), freeAddr(t)
	cfg := strings.NewReplacer("0.0.0.0:5000", httpAddr, "0.0.0.0:4222", gwAddr).Replace(string(cfgExample))
	if !strings.Contains(cfg, httpAddr) || !strings.Contains(cfg, gwAddr) {
		t.Fatalf("outpost.yaml.example no longer names 0.0.0.0:5000 and 0.0.0.0:4222:\n%s", cfgExample)
	}
	cfgFile := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The unit's own command line, its paths moved into the test's directory.
	args := make([]string, 0, len(unit.ExecStart))
	for _, a := range unit.ExecStart[1:] {
		switch a {
		case "/etc/outpost/outpost.yaml":
			a = cfgFile
		case "/var/lib/outpost":
			a = data
		}
		args = append(args, a)
	}
	start := func(envFile []byte) *proc {
		cmd := exec.Command(Binary(t), args...)
		cmd.Env = append(systemdEnv(t, envFile), "PATH=/usr/local/bin:/usr/bin:/bin")
		return startProc(t, cmd)
	}

	// As shipped: the line is there but empty, which must not start a root.
	p := start(envExample)
	if err := p.wait(30 * time.Second); err == nil || !strings.Contains(p.output(), "OUTPOST_CONNECTION_STRING is set but empty") {
		t.Fatalf("the example environment file, unedited: want a refusal naming the empty OUTPOST_CONNECTION_STRING, got %v:\n%s", err, p.output())
	}

	root := StartNode(t, NodeOptions{})
	root.MustCLI(t, "node", "create", "edgebox1", "--mode", "ReadOnly", "--repository", "apps/*")
	cs := strings.TrimSpace(root.MustCLI(t, "node", "get-settings", "edgebox1"))
	filled := strings.Replace(string(envExample), "\nOUTPOST_CONNECTION_STRING=\n", "\nOUTPOST_CONNECTION_STRING="+cs+"\n", 1)
	if filled == string(envExample) {
		t.Fatal("outpost.env.example has no `OUTPOST_CONNECTION_STRING=` line to fill in")
	}
	p = start([]byte(filled))
	Eventually(t, time.Minute, func() error {
		if p.exited() {
			t.Fatalf("the site exited: %v\n%s", p.err, p.output())
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return fmt.Errorf("site /readyz: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("site /readyz: %s", resp.Status)
		}
		list := root.MustCLI(t, "node", "list")
		for _, line := range strings.Split(list, "\n") {
			if strings.HasPrefix(line, "edgebox1 ") && strings.Contains(line, "Online") {
				return nil
			}
		}
		return fmt.Errorf("the root does not list edgebox1 Online:\n%s", list)
	})
	if strings.Contains(p.output(), csField(cs, "SyncTokenPassword")) {
		t.Errorf("the site logged its sync password:\n%s", p.output())
	}
	begin := time.Now()
	if err := p.stop(unit.StopTimeout); err != nil {
		t.Fatalf("SIGTERM: want a clean exit within TimeoutStopSec (%s): %v\n%s", unit.StopTimeout, err, p.output())
	}
	t.Logf("site under the unit's settings: graceful stop in %s", time.Since(begin).Round(10*time.Millisecond))
}

// proc is a process a deploy test starts outside the harness (as systemd or a
// pod would start it); it is killed when the test ends if still running.
type proc struct {
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error // how it exited, once done is closed
	cmd  *exec.Cmd
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{}), cmd: cmd}
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// output is what the process printed so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns how it exited.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("still running after %s", timeout)
	}
}

// stop sends SIGTERM, as systemd and Kubernetes stop a service, and waits.
func (p *proc) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(timeout)
}
