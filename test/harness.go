// Package test holds Outpost's end-to-end tests: real `outpost` processes on
// 127.0.0.1, real storage, real clients. This file is the harness they share.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/outpost once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outpost-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "outpost")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/outpost")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/outpost: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Tool finds an external client the tests drive (skopeo, crane, oras, conformance):
// on PATH or in the repository's bin/, where `make tools` installs the pinned ones.
// A missing tool fails the test: a skipped client test proves nothing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p := filepath.Join(repoRoot(), "bin", name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: run `make tools` (Go clients) or .ci/run (which also installs skopeo)", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// NodeOptions configures StartNode. Zero values take the defaults noted.
type NodeOptions struct {
	// Data is the data directory; default a fresh t.TempDir().
	Data string
	// Mode is ReadWrite (default) or ReadOnly.
	Mode string
	// Name is the node name; default "root".
	Name string
	// Args are extra `outpost serve` flags.
	Args []string
	// ConnectionString makes it a connected node.
	ConnectionString string
	// CA, for a node serving TLS (Args hold --tls-cert), is what its clients trust.
	CA *TestCA
	// Env is added to the process's environment (secrets such as S3 keys, which
	// never go on a command line).
	Env []string
}

// AdminToken is the admin token of every root the harness starts.
const AdminToken = "test-admin-token-0123456789"

// Node is one `outpost serve` process.
type Node struct {
	t    testing.TB
	opts NodeOptions
	// Host is the HTTP listener, 127.0.0.1:port.
	Host string
	// URL is http://Host.
	URL string
	// Gateway is the NATS gateway listener. Both keep their ports across restarts,
	// as a real site's do: its children's connection strings name them.
	Gateway string
	// RegistryProxy and GatewayProxy sit on a child's links when it was started
	// ThroughProxy.
	RegistryProxy, GatewayProxy *FaultProxy

	cmd     *exec.Cmd
	done    chan struct{}
	serving chan [2]string
	exitErr error // set before done closes
	mu      sync.Mutex
	output  bytes.Buffer
	// harnessPw is HarnessToken's password, at a root.
	harnessPw string
	// root is where a child's HarnessToken comes from; nil for a root.
	root *Node
}

// StartNode starts `outpost serve` on free ports, waits until it serves, and stops
// it when the test ends.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	return startNode(t, opts, nil)
}

func startNode(t testing.TB, opts NodeOptions, root *Node) *Node {
	t.Helper()
	if opts.Data == "" {
		opts.Data = t.TempDir()
	}
	if opts.Mode == "" {
		opts.Mode = "ReadWrite"
	}
	if opts.Name == "" {
		opts.Name = "root"
	}
	n := &Node{t: t, opts: opts, root: root}
	n.Start()
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("output of node %s:\n%s", n.opts.Name, n.Output())
		}
	})
	return n
}

// Start (re)starts the process on the node's data directory.
func (n *Node) Start() {
	n.t.Helper()
	n.launch()
	if err := n.awaitServing(); err != nil {
		n.t.Fatal(err)
	}
}

// launch starts the process without waiting for it to serve: root members wait
// for each other before they serve.
func (n *Node) launch() {
	n.t.Helper()
	httpAddr, gatewayAddr := "127.0.0.1:0", "127.0.0.1:0"
	if n.Host != "" {
		httpAddr, gatewayAddr = n.Host, n.Gateway
	}
	args := []string{"serve", "--data", n.opts.Data, "--addr", httpAddr,
		"--gateway-addr", gatewayAddr, "--log-format", "json"}
	if n.opts.ConnectionString != "" {
		// From a file, as a site does: on the command line the sync password would
		// be in every process listing (serve refuses it).
		file := filepath.Join(n.opts.Data, "connection-string")
		if err := os.WriteFile(file, []byte(n.opts.ConnectionString+"\n"), 0o600); err != nil {
			n.t.Fatal(err)
		}
		args = append(args, "--connection-string-file", file)
	} else {
		args = append(args, "--mode", n.opts.Mode, "--name", n.opts.Name)
	}
	cmd := exec.Command(Binary(n.t), append(args, n.opts.Args...)...)
	cmd.Env = append(append(os.Environ(), "OUTPOST_ADMIN_TOKEN="+AdminToken), n.opts.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout = &lockedWriter{n}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	n.serving = make(chan [2]string, 1)
	go n.readLog(stderr, n.serving)
	go func(done chan struct{}) { n.exitErr = cmd.Wait(); close(done) }(n.done)
}

// awaitServing waits until the process launched serves and signs the harness in.
func (n *Node) awaitServing() error {
	n.t.Helper()
	select {
	case addrs := <-n.serving:
		scheme := "http://"
		if n.opts.CA != nil {
			scheme = "https://"
		}
		n.Host, n.URL, n.Gateway = addrs[0], scheme+addrs[0], addrs[1]
		if n.opts.ConnectionString == "" {
			SignIn(n.t, n.Host, "admin", AdminToken)
		} else if n.root != nil {
			SignIn(n.t, n.Host, HarnessToken, n.root.harnessPassword(n.t))
		}
	case <-n.done:
		return fmt.Errorf("outpost serve exited before serving:\n%s", n.Output())
	case <-time.After(60 * time.Second):
		n.Kill()
		return fmt.Errorf("outpost serve not serving after 60s:\n%s", n.Output())
	}
	return nil
}

func (n *Node) readLog(r io.Reader, serving chan<- [2]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		n.mu.Lock()
		n.output.Write(line)
		n.output.WriteByte('\n')
		n.mu.Unlock()
		var rec struct {
			Msg     string `json:"msg"`
			HTTP    string `json:"http"`
			Gateway string `json:"gateway"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "serving" {
			select {
			case serving <- [2]string{rec.HTTP, rec.Gateway}:
			default:
			}
		}
	}
}

type lockedWriter struct{ n *Node }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	return w.n.output.Write(p)
}

// CLI runs `outpost ARGS --server <this node>` with the admin token and returns its
// output and error.
func (n *Node) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), append(args, "--server", n.URL)...)
	cmd.Env = append(os.Environ(), "OUTPOST_TOKEN="+n.operatorToken())
	if n.opts.CA != nil {
		cmd.Env = append(cmd.Env, "OUTPOST_CA_FILE="+n.opts.CA.CACert)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("outpost %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// MustCLI is CLI that fails the test on error.
func (n *Node) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.CLI(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// Child describes a node StartChild defines at the root and starts.
type Child struct {
	Name string
	// Parent is the parent node; "" is the root.
	Parent string
	// Mode is ReadWrite or ReadOnly.
	Mode         string
	Repositories []string
	// CreateArgs are extra `outpost node create` flags (schedule, window, TTL).
	CreateArgs []string
	// ServeArgs are extra `outpost serve` flags.
	ServeArgs []string
	// ServeEnv is added to the process's environment (secrets: S3 keys).
	ServeEnv []string
	// ThroughProxy puts a FaultProxy on both of the child's links to its parent
	// (registry and gateway); the node's RegistryProxy and GatewayProxy control them.
	ThroughProxy bool
}

// StartChild defines a node at root with the CLI and starts it with its connection
// string. Its parent must be running.
func StartChild(t testing.TB, root *Node, c Child) *Node {
	t.Helper()
	create := []string{"node", "create", c.Name, "--mode", c.Mode}
	if c.Parent != "" {
		create = append(create, "--parent", c.Parent)
	}
	for _, r := range c.Repositories {
		create = append(create, "--repository", r)
	}
	root.MustCLI(t, append(create, c.CreateArgs...)...)
	root.harnessPassword(t)
	root.MustCLI(t, "node", "update", c.Name, "--add-client-tokens", HarnessToken)
	cs := strings.TrimSpace(root.MustCLI(t, "node", "get-settings", c.Name))
	var reg, gw *FaultProxy
	args := slices.Clone(c.ServeArgs)
	if c.ThroughProxy {
		// The child reaches its parent through the proxies: serve's endpoint overrides.
		reg = StartFaultProxy(t, csField(cs, "ParentRegistryEndpoint"))
		gw = StartFaultProxy(t, csField(cs, "ParentGatewayEndpoint"))
		args = append(args, "--parent-registry", reg.Addr(), "--parent-gateway", gw.Addr())
	}
	n := startNode(t, NodeOptions{Name: c.Name, ConnectionString: cs, Args: args, Env: c.ServeEnv}, root)
	n.RegistryProxy, n.GatewayProxy = reg, gw
	return n
}

// csField reads one key of a connection string.
func csField(cs, key string) string {
	for _, part := range strings.Split(cs, ";") {
		if v, ok := strings.CutPrefix(part, key+"="); ok {
			return v
		}
	}
	return ""
}

// Data is the node's data directory.
func (n *Node) Data() string { return n.opts.Data }

// Output is everything the process logged.
func (n *Node) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.output.String()
}

// Kill ends the process with SIGKILL: no shutdown, no flush.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// Signal sends sig to the process.
func (n *Node) Signal(sig os.Signal) {
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Wait waits up to timeout for the process to exit and returns how it exited.
func (n *Node) Wait(timeout time.Duration) error {
	if n.cmd == nil {
		return nil
	}
	select {
	case <-n.done:
		n.cmd = nil
		return n.exitErr
	case <-time.After(timeout):
		return fmt.Errorf("node %s still running after %s", n.opts.Name, timeout)
	}
}

// Stop ends the process with SIGTERM and waits for its graceful shutdown.
func (n *Node) Stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.t.Errorf("node %s did not stop within 30s of SIGTERM", n.opts.Name)
		n.Kill()
	}
	n.cmd = nil
}

// Eventually polls fn until it returns nil; fn's last error, saying what is not yet
// true, fails the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Run runs a command with a deadline and returns its combined output.
func Run(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	return RunEnv(t, timeout, nil, name, args...)
}

// RunEnv is Run with env added to the test process's environment (later wins).
func RunEnv(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	return string(out), err
}

// MustRun is Run that fails the test on error.
func MustRun(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := Run(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func jsonOf(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TierOptions configures StartTier.
type TierOptions struct {
	// Members is how many root members; default 3.
	Members int
	// Args are extra `outpost serve` flags of every member: the storage all of them
	// share (--storage s3 ...).
	Args []string
	// Env is added to every member's environment (the S3 keys).
	Env []string
}

// StartTier starts a root tier: Members `outpost serve` processes named root, one
// JetStream cluster (routes on free ports, one route secret in a file), the same
// admin token and storage, each giving every member's endpoints to the connection
// strings it prints (--tier-registry, --tier-gateway). They start at once, since
// each waits for the others' quorum before it serves. The members keep their ports
// across restarts.
func StartTier(t testing.TB, opts TierOptions) []*Node {
	t.Helper()
	if opts.Members == 0 {
		opts.Members = 3
	}
	secret := filepath.Join(t.TempDir(), "route.secret")
	if err := os.WriteFile(secret, []byte("tier-route-secret-"+strings.Repeat("x", 16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var hosts, gateways, routes []string
	for range opts.Members {
		hosts, gateways, routes = append(hosts, freeAddr(t)), append(gateways, freeAddr(t)), append(routes, freeAddr(t))
	}
	members := make([]*Node, opts.Members)
	for i := range members {
		args := append([]string{"--cluster-name", "tier", "--cluster-listen", routes[i],
			"--cluster-routes", strings.Join(routes, ","), "--cluster-secret-file", secret,
			"--tier-registry", strings.Join(hosts, ","), "--tier-gateway", strings.Join(gateways, ",")},
			opts.Args...)
		n := &Node{t: t, opts: NodeOptions{Data: t.TempDir(), Mode: "ReadWrite", Name: "root", Args: args, Env: opts.Env},
			Host: hosts[i], Gateway: gateways[i]}
		n.launch()
		members[i] = n
		t.Cleanup(func() {
			n.Stop()
			if t.Failed() {
				t.Logf("output of root member %d (%s):\n%s", i, n.Host, n.Output())
			}
		})
	}
	for _, n := range members {
		if err := n.awaitServing(); err != nil {
			t.Fatal(err)
		}
	}
	return members
}

// freeAddr is a 127.0.0.1 port free a moment ago, for a listener whose address
// others must know before it starts.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
