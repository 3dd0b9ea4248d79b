package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// helmEnv keeps helm's cache, config and data in the test's directory.
func helmEnv(t *testing.T) []string {
	dir := t.TempDir()
	return []string{"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"), "HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data")}
}

// TestDeployHelm: for each values example, `helm lint` passes, `helm template`
// renders, and kubeconform finds every rendered object valid against the
// Kubernetes (and ServiceMonitor) schemas shipped in deploy/helm/schemas, offline
// and strict (unknown fields refused). The config file the chart renders uses
// only `outpost serve` settings, and the roles render what they promise.
func TestDeployHelm(t *testing.T) {
	helm, kubeconform := Tool(t, "helm"), Tool(t, "kubeconform")
	env := helmEnv(t)
	chart := deployDir("helm", "outpost")
	schemas := deployDir("helm", "schemas") + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
	serveFlags := serveFlagNames(t)
	examples, err := filepath.Glob(filepath.Join(chart, "examples", "*.yaml"))
	if err != nil || len(examples) != 3 {
		t.Fatalf("want 3 values examples (root, ReadWrite site, ReadOnly site with a private CA), got %v %v", examples, err)
	}
	for _, values := range examples {
		name := strings.TrimSuffix(filepath.Base(values), ".yaml")
		t.Run(name, func(t *testing.T) {
			if out, err := RunEnv(t, time.Minute, env, helm, "lint", "--strict", chart, "-f", values); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			rendered, err := RunEnv(t, time.Minute, env, helm, "template", name, chart, "-f", values, "--namespace", "registry")
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, rendered)
			}
			file := filepath.Join(t.TempDir(), "rendered.yaml")
			if err := os.WriteFile(file, []byte(rendered), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := Run(t, time.Minute, kubeconform, "-strict", "-summary", "-schema-location", schemas, file)
			if err != nil || !strings.Contains(out, "Invalid: 0, Errors: 0, Skipped: 0") {
				t.Fatalf("kubeconform: %v\n%s", err, out)
			}
			t.Logf("%s", strings.TrimSpace(out))
			objs := renderedObjects(t, rendered)
			for key := range configKeys(t, objs) {
				if !serveFlags[key] {
					t.Errorf("the chart's outpost.yaml sets %q: not an `outpost serve` flag (serve --config would refuse it)", key)
				}
			}
			sts := objs["StatefulSet"]
			if sts == nil {
				t.Fatal("no StatefulSet rendered")
			}
			data, err := yaml.Marshal(sts)
			if err != nil {
				t.Fatal(err)
			}
			text := string(data)
			for _, want := range []string{"runAsNonRoot: true", "path: /healthz", "path: /readyz", "mountPath: /data", "readOnlyRootFilesystem: true"} {
				if !strings.Contains(text, want) {
					t.Errorf("StatefulSet: no %q", want)
				}
			}
			secret := "OUTPOST_CONNECTION_STRING"
			if strings.HasPrefix(name, "root") {
				secret = "OUTPOST_ADMIN_TOKEN"
				if objs["ServiceMonitor"] == nil {
					t.Error("the root example enables the ServiceMonitor, none rendered")
				}
			}
			if !regexp.MustCompile(`name: ` + secret + `\s+valueFrom:\s+secretKeyRef:`).MatchString(text) {
				t.Errorf("StatefulSet: %s does not come from a Secret:\n%s", secret, text)
			}
		})
	}

	// Values that would deploy something else than meant are refused, saying why.
	for _, c := range []struct{ why, want string }{
		{"role=root", "root.adminTokenSecret.name"},
		{"role=site", "site.connectionStringSecret.name"},
		{"role=root,root.adminTokenSecret.name=a,root.replicas=3", "until the root tier"},
		{"role=site,site.connectionStringSecret.name=a,service.type=Ingress", `service.type "Ingress"`},
	} {
		out, err := RunEnv(t, time.Minute, env, helm, "template", "x", chart, "--set", c.why)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("helm template --set %s: want a refusal naming %q, got %v:\n%s", c.why, c.want, err, out)
		}
	}
}

// renderedObjects maps kind to the last rendered object of that kind.
func renderedObjects(t *testing.T, rendered string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(rendered))
	for {
		var o map[string]any
		if err := dec.Decode(&o); err != nil {
			break
		}
		if k, ok := o["kind"].(string); ok {
			objs[k] = o
		}
	}
	return objs
}

// configKeys are the keys of the outpost.yaml the chart's ConfigMap holds.
func configKeys(t *testing.T, objs map[string]map[string]any) map[string]bool {
	t.Helper()
	cm, _ := objs["ConfigMap"]["data"].(map[string]any)
	text, ok := cm["outpost.yaml"].(string)
	if !ok {
		t.Fatal("no ConfigMap with outpost.yaml rendered")
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("outpost.yaml: %v\n%s", err, text)
	}
	keys := map[string]bool{}
	for k := range cfg {
		keys[k] = true
	}
	return keys
}

// serveFlagNames are the flags `outpost serve --help` lists.
func serveFlagNames(t *testing.T) map[string]bool {
	t.Helper()
	out := MustRun(t, time.Minute, Binary(t), "serve", "--help")
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z][a-z-]+)`).FindAllStringSubmatch(out, -1) {
		names[m[1]] = true
	}
	return names
}

// TestDeployHelmSiteRuns: what the chart renders for the ReadOnly site with a
// private CA runs. The container's args, the rendered outpost.yaml and the CA at
// the path where the chart mounts its Secret start a real site (addresses moved
// to 127.0.0.1, the mounts to files), with its connection string in
// OUTPOST_CONNECTION_STRING as the Secret reference gives it; the site reaches
// its root over https with that CA and the root lists it Online, ReadOnly.
func TestDeployHelmSiteRuns(t *testing.T) {
	helm := Tool(t, "helm")
	values := filepath.Join(deployDir("helm", "outpost"), "examples", "site-readonly-private-ca.yaml")
	rendered, err := RunEnv(t, time.Minute, helmEnv(t), helm, "template", "store42", deployDir("helm", "outpost"), "-f", values)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, rendered)
	}
	objs := renderedObjects(t, rendered)
	var sts struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args         []string
						VolumeMounts []struct {
							Name      string
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					}
				}
			}
		}
	}
	data, err := yaml.Marshal(objs["StatefulSet"])
	if err != nil || yaml.Unmarshal(data, &sts) != nil || len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("StatefulSet: %v\n%s", err, data)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	var cfg map[string]string
	cm, _ := objs["ConfigMap"]["data"].(map[string]any)
	if err := yaml.Unmarshal([]byte(cm["outpost.yaml"].(string)), &cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cfg["parent-ca"], mounts["parent-ca"]+"/") {
		t.Fatalf("outpost.yaml's parent-ca %q is not in the CA Secret's mount %q", cfg["parent-ca"], mounts["parent-ca"])
	}

	ca := NewTestCA(t)
	root := StartNode(t, NodeOptions{CA: ca, Args: []string{"--tls-cert", ca.Cert, "--tls-key", ca.Key}})
	root.MustCLI(t, "node", "create", "store42", "--mode", "ReadOnly", "--repository", "retail/*")
	cs := strings.TrimSpace(root.MustCLI(t, "node", "get-settings", "store42"))
	if !strings.Contains(cs, "ParentEndpointProtocol=https") {
		t.Fatalf("connection string of a TLS root: want https, got protocol %q", csField(cs, "ParentEndpointProtocol"))
	}

	// The pod's file system, in the test's directory.
	dir := t.TempDir()
	caFile := filepath.Join(dir, strings.TrimPrefix(cfg["parent-ca"], "/"))
	if err := os.MkdirAll(filepath.Dir(caFile), 0o700); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(ca.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, gwAddr := freeAddr(t), freeAddr(t)
	cfg["parent-ca"], cfg["addr"], cfg["gateway-addr"] = caFile, httpAddr, gwAddr
	cfgData, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfgFile, cfgData, 0o600); err != nil {
		t.Fatal(err)
	}
	args := make([]string, 0, len(c.Args))
	for _, a := range c.Args {
		switch a {
		case mounts["config"]:
			a = cfgFile
		case mounts["data"]:
			a = filepath.Join(dir, "data")
		}
		args = append(args, a)
	}
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append(os.Environ(), "OUTPOST_CONNECTION_STRING="+cs)
	p := startProc(t, cmd)
	t.Cleanup(func() {
		if err := p.stop(time.Minute); err != nil {
			t.Errorf("the site after SIGTERM: %v", err)
		}
		if t.Failed() {
			t.Logf("site:\n%s", p.output())
		}
	})
	Eventually(t, time.Minute, func() error {
		if p.exited() {
			t.Fatalf("the site exited: %v\n%s", p.err, p.output())
		}
		list, err := root.CLI(t, "node", "list")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.HasPrefix(line, "store42 ") && strings.Contains(line, "Online") && strings.Contains(line, "ReadOnly") {
				return nil
			}
		}
		return fmt.Errorf("the root does not list store42 Online, ReadOnly:\n%s", list)
	})
}
