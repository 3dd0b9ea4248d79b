package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// TestDeployComposeUp runs bootstrap.sh as an operator would, with
// podman-compose and the image `make image` built (copied into a podman store of
// the test's own with `make image-load`): the root comes up, the script defines
// factory1 (ReadWrite) and store1 (ReadOnly) there, hands each its connection
// string and starts it, and the root lists both Online in their modes. A second
// run changes nothing.
//
// podman here needs what TestDeployImage says (runc, cgroupfs, ulimits at the
// machine's own) and netavark named (with a fresh store podman 4.3 picks CNI,
// whose networks have no DNS: the sites could not resolve "root") with its
// network definitions in the test's store, all given through CONTAINERS_CONF;
// the compose file and the script are as shipped.
func TestDeployComposeUp(t *testing.T) {
	Tool(t, "podman-compose")
	Tool(t, "skopeo")
	img := buildTestImage(t)
	// A short store path: podman refuses a runroot over 50 characters.
	store, err := os.MkdirTemp("", "pc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(store) })
	conf := map[string]string{
		"containers.conf": fmt.Sprintf("[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n"+
			"[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n"+
			"[network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = %q\n", store+"/net"),
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", store+"/r", store+"/u"),
	}
	for name, body := range conf {
		if err := os.WriteFile(filepath.Join(store, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := Run(t, 5*time.Minute, "make", "-C", repoRoot(), "image-load", "IMAGE="+img.tag,
		fmt.Sprintf("LOAD_TO=containers-storage:[vfs@%s/r+%s/u]", store, store)); err != nil {
		t.Fatalf("make image-load: %v\n%s", err, out)
	}
	// The project is named after its directory: one of the test's own.
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("outposttest%d", os.Getpid()))
	MustRun(t, time.Minute, "cp", "-a", deployDir("compose"), dir)
	ports := map[string]string{}
	env := []string{"CONTAINERS_CONF=" + filepath.Join(store, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(store, "storage.conf"), "OUTPOST_IMAGE=" + img.tag}
	for _, s := range []string{"ROOT", "FACTORY1", "STORE1"} {
		addr := freeAddr(t)
		ports[s] = addr
		env = append(env, s+"_PORT="+strings.TrimPrefix(addr, "127.0.0.1:"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range []string{"root", "factory1", "store1"} {
				out, _ := RunEnv(t, time.Minute, env, "podman", "logs", "--tail", "30", filepath.Base(dir)+"_"+s+"_1")
				t.Logf("%s:\n%s", s, out)
			}
		}
		out, err := RunEnv(t, 3*time.Minute, env, "sh", "-c", `cd "$1" && podman-compose down -v`, "sh", dir)
		if err != nil {
			t.Logf("podman-compose down: %v\n%s", err, out)
		}
		// Whatever down left (a container caught restarting) goes too, before the
		// store does: a container left running keeps its port forwarding.
		for _, args := range [][]string{{"rm", "-a", "-f", "-t", "0"}, {"network", "prune", "-f"}, {"volume", "prune", "-f"}} {
			if out, err := RunEnv(t, time.Minute, env, "podman", args...); err != nil {
				t.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
	bootstrap := func() string {
		start := time.Now()
		out, err := RunEnv(t, 5*time.Minute, env, filepath.Join(dir, "bootstrap.sh"))
		if err != nil {
			t.Fatalf("bootstrap.sh: %v\n%s", err, out)
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
	for _, site := range []string{"root", "factory1", "store1"} {
		file := filepath.Join(dir, "secrets", site+".env")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if site != "root" && !strings.HasPrefix(string(data), "OUTPOST_CONNECTION_STRING=ConnectedRegistryName="+site+";") {
			t.Errorf("secrets/%s.env: want its connection string, got %d bytes", site, len(data))
		}
		if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
			t.Errorf("secrets/%s.env: mode %v, want 0600", site, info.Mode().Perm())
		}
		before[site] = string(data)
	}
	token := strings.TrimSpace(strings.SplitN(strings.TrimPrefix(before["root"], "OUTPOST_ADMIN_TOKEN="), "\n", 2)[0])
	cli := func(args ...string) (string, error) {
		return RunEnv(t, time.Minute, []string{"OUTPOST_SERVER=http://" + ports["ROOT"], "OUTPOST_TOKEN=" + token}, Binary(t), args...)
	}
	Eventually(t, 2*time.Minute, func() error {
		list, err := cli("node", "list")
		if err != nil {
			return fmt.Errorf("node list at the root (published on %s): %v %s", ports["ROOT"], err, list)
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
	for _, s := range []string{"FACTORY1", "STORE1"} {
		resp, err := http.Get("http://" + ports[s] + "/readyz")
		if err != nil {
			t.Fatalf("%s's published port: %v", s, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s /readyz: %s", s, resp.Status)
		}
	}

	// Again: nothing is defined twice, no password rotated.
	out = bootstrap()
	if strings.Contains(out, "defined ") || strings.Contains(out, "written") {
		t.Errorf("a second bootstrap.sh changed something:\n%s", out)
	}
	for site, was := range before {
		if data, _ := os.ReadFile(filepath.Join(dir, "secrets", site+".env")); string(data) != was {
			t.Errorf("a second bootstrap.sh rewrote secrets/%s.env", site)
		}
	}
}
