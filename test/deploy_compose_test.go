package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// composeImage is the image name the tests give compose.yaml (OUTPOST_IMAGE):
// in podman-compose's output, what follows it is the service's command.
const composeImage = "outpost-under-test:compose"

// composeService is one service as podman-compose would run it.
type composeService struct {
	envFile string
	command []string
	ports   []string
}

// composeRuns reads compose.yaml in dir with podman-compose, which has no
// `config` command in Debian 12 (1.0.3): its dry run resolves the file (anchors,
// merge keys, env files, volumes, ports) and prints the `podman run` of each
// service; --podman-path /bin/true keeps it from creating volumes and networks.
func composeRuns(t *testing.T, dir string) map[string]composeService {
	t.Helper()
	pc := Tool(t, "podman-compose")
	out, err := RunEnv(t, time.Minute, []string{"OUTPOST_IMAGE=" + composeImage}, "sh", "-c",
		`cd "$1" && "$2" --podman-path /bin/true --dry-run up -d`, "sh", dir, pc)
	if err != nil {
		t.Fatalf("podman-compose --dry-run up: %v\n%s", err, out)
	}
	services := map[string]composeService{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "/usr/bin/true run ") && !strings.HasPrefix(line, "/bin/true run ") {
			continue
		}
		opts, cmd, ok := strings.Cut(line, " "+composeImage+" ")
		if !ok {
			t.Fatalf("podman-compose runs another image than OUTPOST_IMAGE:\n%s", line)
		}
		var s composeService
		var name string
		f := strings.Fields(opts)
		for i := 0; i+1 < len(f); i++ {
			switch {
			case f[i] == "--env-file":
				s.envFile = f[i+1]
			case f[i] == "-p":
				s.ports = append(s.ports, f[i+1])
			case f[i] == "--label" && strings.HasPrefix(f[i+1], "com.docker.compose.service="):
				name = strings.TrimPrefix(f[i+1], "com.docker.compose.service=")
			}
		}
		s.command = strings.Fields(cmd)
		services[name] = s
	}
	return services
}

// TestDeployComposeConfig: compose.yaml parses (YAML, and as podman-compose
// resolves it) into a root and two sites, each with its secrets in an env file
// the bootstrap makes, nothing secret in a command, ports published on 127.0.0.1.
func TestDeployComposeConfig(t *testing.T) {
	dir := t.TempDir()
	MustRun(t, time.Minute, "cp", "-a", deployDir("compose")+"/.", dir)
	raw, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			EnvFile string `yaml:"env_file"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(doc.Services) != 3 {
		t.Fatalf("compose.yaml: want 3 services (root, factory1, store1), got %d", len(doc.Services))
	}
	MustRun(t, time.Minute, filepath.Join(dir, "bootstrap.sh"), "secrets")
	services := composeRuns(t, dir)
	if len(services) != 3 {
		t.Fatalf("podman-compose resolves %d services, want 3: %+v", len(services), services)
	}
	for _, name := range []string{"root", "factory1", "store1"} {
		s, ok := services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if s.envFile != filepath.Join(dir, "secrets", name+".env") {
			t.Errorf("%s: env file %q, want secrets/%s.env", name, s.envFile, name)
		}
		if len(s.command) < 3 || s.command[0] != "serve" || strings.Contains(strings.Join(s.command, " "), "connection-string") {
			t.Errorf("%s: command %q: want serve, without a connection string", name, s.command)
		}
		for _, p := range s.ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: publishes %s beyond 127.0.0.1", name, p)
			}
		}
	}
	info, err := os.Stat(filepath.Join(dir, "secrets", "root.env"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secrets/root.env: want mode 0600: %v %v", info.Mode(), err)
	}
}

// TestDeployComposeBootstrap runs bootstrap.sh against real processes: compose's
// `up -d SERVICE` starts bin/outpost with that service's command and env file as
// podman-compose resolves them (listen addresses moved to free 127.0.0.1 ports,
// the root advertised there instead of as "root"), and the CLI reaches the root
// as it would inside the root's container (its env file's OUTPOST_TOKEN). The
// tree comes up: both sites defined at the root, connected, their modes as
// defined; a second run changes nothing.
func TestDeployComposeBootstrap(t *testing.T) {
	dir := t.TempDir()
	MustRun(t, time.Minute, "cp", "-a", deployDir("compose")+"/.", dir)
	MustRun(t, time.Minute, filepath.Join(dir, "bootstrap.sh"), "secrets")
	services := composeRuns(t, dir)
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	addrs := map[string][2]string{}
	for name, s := range services {
		http, gw := freeAddr(t), freeAddr(t)
		addrs[name] = [2]string{http, gw}
		args := make([]string, 0, len(s.command))
		for i, a := range s.command {
			switch {
			case a == "/data":
				a = filepath.Join(dir, "data-"+name)
			case a == "0.0.0.0:5000":
				a = http
			case a == "0.0.0.0:4222":
				a = gw
			case i > 0 && s.command[i-1] == "--advertise-addr" && a == "root":
				a = "127.0.0.1"
			}
			args = append(args, a)
		}
		if err := os.WriteFile(filepath.Join(run, name+".args"), []byte(strings.Join(args, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(run, name+".envfile"), []byte(s.envFile+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { stopComposeProcesses(t, run) })
	// The env file as compose reads it: KEY=VALUE lines, the value taken literally.
	const readEnv = `while IFS= read -r l || [ -n "$l" ]; do case "$l" in ''|'#'*) ;; *) export "$l";; esac; done < "$1"`
	shim := fmt.Sprintf(`#!/usr/bin/env bash
set -euo pipefail
readenv() { %s; }
[ "$1 $2" = "up -d" ] || { echo "compose shim: only up -d: $*" >&2; exit 2; }
shift 2
for svc in "$@"; do
  if [ -s %[2]q/$svc.pid ] && kill -0 "$(cat %[2]q/$svc.pid)" 2>/dev/null; then continue; fi
  mapfile -t args < %[2]q/$svc.args
  ( readenv "$(cat %[2]q/$svc.envfile)"; exec %[3]q "${args[@]}" ) > %[2]q/$svc.log 2>&1 &
  echo $! > %[2]q/$svc.pid
done
`, readEnv, run, Binary(t))
	cli := fmt.Sprintf(`#!/usr/bin/env bash
set -euo pipefail
readenv() { %s; }
readenv %q
export OUTPOST_SERVER=http://%s
exec %q "$@"
`, readEnv, filepath.Join(dir, "secrets", "root.env"), addrs["root"][0], Binary(t))
	for name, body := range map[string]string{"compose": shim, "outpost": cli} {
		if err := os.WriteFile(filepath.Join(run, name), []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"COMPOSE=" + filepath.Join(run, "compose"), "OUTPOST=" + filepath.Join(run, "outpost")}
	bootstrap := func() string {
		start := time.Now()
		out, err := RunEnv(t, 3*time.Minute, env, filepath.Join(dir, "bootstrap.sh"))
		if err != nil {
			logs, _ := exec.Command("sh", "-c", "tail -n 20 "+run+"/*.log").CombinedOutput()
			t.Fatalf("bootstrap.sh: %v\n%s\nlogs:\n%s", err, out, logs)
		}
		t.Logf("bootstrap.sh: %s", time.Since(start).Round(10*time.Millisecond))
		return out
	}
	out := bootstrap()
	for _, want := range []string{"defined factory1 (ReadWrite", "defined store1 (ReadOnly", "connection string of store1 written"} {
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap.sh output: no %q:\n%s", want, out)
		}
	}
	before := map[string]string{}
	for _, site := range []string{"factory1", "store1"} {
		file := filepath.Join(dir, "secrets", site+".env")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "OUTPOST_CONNECTION_STRING=ConnectedRegistryName="+site+";") {
			t.Errorf("secrets/%s.env: want its connection string, got %d bytes", site, len(data))
		}
		if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
			t.Errorf("secrets/%s.env: mode %v, want 0600", site, info.Mode().Perm())
		}
		before[site] = string(data)
	}
	rootCLI := func(args ...string) (string, error) {
		return RunEnv(t, time.Minute, nil, filepath.Join(run, "outpost"), args...)
	}
	Eventually(t, time.Minute, func() error {
		list, err := rootCLI("node", "list")
		if err != nil {
			return fmt.Errorf("node list at the root: %v %s", err, list)
		}
		for site, mode := range map[string]string{"factory1": "ReadWrite", "store1": "ReadOnly"} {
			ok := false
			for _, line := range strings.Split(list, "\n") {
				ok = ok || strings.HasPrefix(line, site+" ") && strings.Contains(line, "Online") && strings.Contains(line, mode)
			}
			if !ok {
				return fmt.Errorf("the root does not list %s %s Online:\n%s", site, mode, list)
			}
		}
		return nil
	})

	// Again: nothing is defined twice, no password rotated, nothing restarted.
	pids := map[string]string{}
	for _, s := range []string{"root", "factory1", "store1"} {
		b, _ := os.ReadFile(filepath.Join(run, s+".pid"))
		pids[s] = string(b)
	}
	out = bootstrap()
	if strings.Contains(out, "defined ") || strings.Contains(out, "written") {
		t.Errorf("a second bootstrap.sh changed something:\n%s", out)
	}
	for site, was := range before {
		if data, _ := os.ReadFile(filepath.Join(dir, "secrets", site+".env")); string(data) != was {
			t.Errorf("a second bootstrap.sh rewrote secrets/%s.env", site)
		}
	}
	for s, pid := range pids {
		if b, _ := os.ReadFile(filepath.Join(run, s+".pid")); string(b) != pid {
			t.Errorf("a second bootstrap.sh restarted %s", s)
		}
	}
}

// stopComposeProcesses ends what the compose shim started: SIGTERM, then waits.
func stopComposeProcesses(t *testing.T, run string) {
	pidFiles, _ := filepath.Glob(filepath.Join(run, "*.pid"))
	for _, f := range pidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("%s: pid %d still running 30s after SIGTERM", filepath.Base(f), pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			if logs, err := os.ReadFile(strings.TrimSuffix(f, ".pid") + ".log"); err == nil {
				t.Logf("%s:\n%s", filepath.Base(f), logs)
			}
		}
	}
}
