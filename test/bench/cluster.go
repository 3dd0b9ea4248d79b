package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	headPoll = 10 * time.Millisecond
	// A tag list is heavier than a HEAD, and a node answers it while replicating; on
	// a small machine polling it every 10 ms would slow down what is measured.
	listPoll = 50 * time.Millisecond
	// statusPoll is how often the root's node list is read; nodes report every 2 s.
	statusPoll = 500 * time.Millisecond
)

// clusterFlags are the flags of the suites that run a tree of Outpost nodes.
type clusterFlags struct {
	timeout  time.Duration
	logLevel string
}

func (f *clusterFlags) register(fs *flag.FlagSet, timeout time.Duration) {
	f.timeout, f.logLevel = timeout, "info"
	fs.DurationVar(&f.timeout, "timeout", f.timeout, "longest wait for one replication before the run fails")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "the nodes' log level; with --keep, debug shows each replicated event")
}

// cluster is a root node and the nodes started beside or under it, each an
// `outpost serve` process with its data and output in dir/NAME, and the clients
// that talk to them. Clients sign in as admin with token at the root and at
// standalone nodes, and with benchToken at the children (see credentials.go).
type cluster struct {
	common
	clusterFlags
	dir   string
	token string
	// clientPassword is benchToken's, once created at the root.
	clientPassword string

	root    *server
	rootC   *client
	started []*server
	clients []*client
}

func startCluster(ctx context.Context, c common, f clusterFlags, dir string) (_ *cluster, err error) {
	cl := &cluster{common: c, clusterFlags: f, dir: dir, token: newAdminToken()}
	defer func() {
		if err != nil {
			err = errors.Join(err, cl.stop())
		}
	}()
	if cl.root, err = cl.start(ctx, "root", rootOptions(cl.token, "--name", "root", "--log-level", f.logLevel)); err != nil {
		return nil, err
	}
	if cl.rootC, err = cl.client(ctx, cl.root); err != nil {
		return nil, err
	}
	return cl, nil
}

// start runs one node with its data and output in dir/name.
func (cl *cluster) start(ctx context.Context, name string, o outpostOptions) (*server, error) {
	dir := filepath.Join(cl.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: data directory: %w", name, err)
	}
	o.name = name
	if cl.keep {
		o.log = filepath.Join(dir, "output.log")
	}
	srv, err := startOutpost(ctx, cl.outpost, dir, o)
	if err != nil {
		return nil, err
	}
	cl.started = append(cl.started, srv)
	return srv, nil
}

// startStandalone runs a root of its own, not part of the tree, with the same admin
// token as the root.
func (cl *cluster) startStandalone(ctx context.Context, name string) (*server, error) {
	return cl.start(ctx, name, rootOptions(cl.token, "--name", name, "--log-level", cl.logLevel))
}

// client makes a client for srv that stop closes.
func (cl *cluster) client(ctx context.Context, srv *server) (*client, error) {
	c, err := newClient(ctx, srv, cl.jobs)
	if err != nil {
		return nil, err
	}
	cl.clients = append(cl.clients, c)
	return c, nil
}

// childSpec is a node to define at the root and start.
type childSpec struct {
	name   string
	parent string // "" for the root
	mode   string // ReadWrite or ReadOnly
	repos  []string
	create []string // more `node create` flags, e.g. a sync schedule
	serve  []string // more serve flags, e.g. --clock-offset-file
}

// define creates the node at the root with the CLI, binds benchToken to it, and
// returns the options to start it with. The binding comes before the start, so that
// the node has it from its first sync, before it serves.
func (cl *cluster) define(ctx context.Context, s childSpec) (outpostOptions, error) {
	args := []string{"node", "create", s.name, "--mode", s.mode, "--log-level", cl.logLevel}
	if s.parent != "" {
		args = append(args, "--parent", s.parent)
	}
	for _, r := range s.repos {
		args = append(args, "--repository", r)
	}
	if _, err := cl.cli(ctx, append(args, s.create...)...); err != nil {
		return outpostOptions{}, err
	}
	creds, err := cl.clientCredentials(ctx)
	if err != nil {
		return outpostOptions{}, err
	}
	if _, err := cl.cli(ctx, "node", "update", s.name, "--add-client-tokens", benchToken); err != nil {
		return outpostOptions{}, err
	}
	cs, err := cl.cli(ctx, "node", "get-settings", s.name)
	if err != nil {
		return outpostOptions{}, err
	}
	return outpostOptions{args: s.serve, env: []string{"OUTPOST_CONNECTION_STRING=" + strings.TrimSpace(cs)}, creds: creds}, nil
}

// startChild defines the node and starts it. A child's settings need its parent
// running, so define and start in order.
func (cl *cluster) startChild(ctx context.Context, s childSpec) (*server, error) {
	o, err := cl.define(ctx, s)
	if err != nil {
		return nil, err
	}
	return cl.start(ctx, s.name, o)
}

// cli runs the outpost CLI against the root with the admin token.
func (cl *cluster) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cl.outpost, args...)
	cmd.Env = append(childEnv(), "OUTPOST_SERVER=http://"+cl.root.addr, "OUTPOST_TOKEN="+cl.token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("outpost %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// stop closes the clients and stops the processes in reverse order, leaves first.
func (cl *cluster) stop() error {
	for _, c := range cl.clients {
		c.close()
	}
	var errs []error
	for _, s := range slices.Backward(cl.started) {
		errs = append(errs, s.stop())
	}
	return errors.Join(errs...)
}

// nodeStatus is the part of a node's status at the root (`outpost node list
// --output json`) the suites read.
type nodeStatus struct {
	State      string    `json:"state"`
	Reported   time.Time `json:"reported"`
	WindowOpen bool      `json:"windowOpen"`
	Links      []struct {
		Link            string `json:"link"`
		PendingMessages uint64 `json:"pendingMessages"`
	} `json:"links"`
}

// pending is what waits on one link ("downstream" or "upstream").
func (s nodeStatus) pending(link string) uint64 {
	var n uint64
	for _, l := range s.Links {
		if l.Link == link {
			n += l.PendingMessages
		}
	}
	return n
}

// status is the last status the node reported to the root; ok is false while it
// has reported none.
func (cl *cluster) status(ctx context.Context, node string) (_ nodeStatus, ok bool, _ error) {
	out, err := cl.cli(ctx, "node", "list", "--output", "json")
	if err != nil {
		return nodeStatus{}, false, err
	}
	var nodes []struct {
		Name   string      `json:"name"`
		Status *nodeStatus `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		return nodeStatus{}, false, fmt.Errorf("node list: %w", err)
	}
	for _, n := range nodes {
		if n.Name == node {
			if n.Status == nil {
				return nodeStatus{}, false, nil
			}
			return *n.Status, true, nil
		}
	}
	return nodeStatus{}, false, fmt.Errorf("node list: no node %s", node)
}

// waitStatus polls the root until the node reports, after since, a status that
// satisfies ok; it returns that status. what says what is awaited, for errors.
func (cl *cluster) waitStatus(ctx context.Context, node string, since time.Time, what string, ok func(nodeStatus) bool) (nodeStatus, error) {
	var got nodeStatus
	err := poll(ctx, statusPoll, cl.timeout, func(ctx context.Context) (bool, string, error) {
		st, reported, err := cl.status(ctx, node)
		if err != nil {
			return false, "", err
		}
		if !reported || !st.Reported.After(since) {
			return false, fmt.Sprintf("no report since %s", since.Format(time.TimeOnly)), nil
		}
		got = st
		return ok(st), fmt.Sprintf("last report: %+v", st), nil
	})
	if err != nil {
		return got, fmt.Errorf("%s at the root: waiting for %s: %w", node, what, err)
	}
	return got, nil
}

// waitResolves polls a node until the image's tag resolves to its digest.
func (cl *cluster) waitResolves(ctx context.Context, c *client, srv *server, repo string, im image) error {
	err := poll(ctx, headPoll, cl.timeout, func(ctx context.Context) (bool, string, error) {
		got, ok, err := c.resolve(ctx, repo, im.tag)
		if err != nil {
			return false, "", err
		}
		if ok && got != im.digest {
			// A fresh tag can only ever hold the pushed digest.
			return false, "", fmt.Errorf("resolves to %s, want %s", got, im.digest)
		}
		return ok, "tag unknown", nil
	})
	if err != nil {
		return fmt.Errorf("%s at %s: %w%s", c.ref(repo, im.tag), srv.name, err, srv.lastOutput())
	}
	return nil
}

// waitListed polls a node's tag list of repo until it holds every image's tag.
func (cl *cluster) waitListed(ctx context.Context, c *client, srv *server, repo string, imgs []image) error {
	err := poll(ctx, listPoll, cl.timeout, func(ctx context.Context) (bool, string, error) {
		tags, err := c.tags(ctx, repo)
		if err != nil {
			return false, "", err
		}
		listed := make(map[string]bool, len(tags))
		for _, tag := range tags {
			listed[tag] = true
		}
		n := 0
		for _, im := range imgs {
			if listed[im.tag] {
				n++
			}
		}
		return n == len(imgs), fmt.Sprintf("%d of %d tags listed", n, len(imgs)), nil
	})
	if err != nil {
		return fmt.Errorf("%s at %s: %w%s", c.registry.Repo(repo), srv.name, err, srv.lastOutput())
	}
	return nil
}

// counter sums the samples of a counter on the server's /metrics whose labels
// include label (`direction="downstream"`; "" for all); ok is false if the server
// exposes no such counter.
func (s *server) counter(ctx context.Context, metric, label string) (sum float64, ok bool, _ error) {
	url := "http://" + s.addr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("%s: GET %s: %s", s.name, url, resp.Status)
	}
	// The text format: `name{labels} value [timestamp]`, or `name value` without labels.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), metric)
		if !found || rest == "" || rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		labels := ""
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || label != "" && !strings.Contains(labels, label) {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %s: %w", s.name, sc.Text(), err)
		}
		sum, ok = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("%s: read /metrics: %w", s.name, err)
	}
	return sum, ok, nil
}

// peakRSS is the process's peak resident set size so far, in bytes (VmHWM).
func (p *process) peakRSS() (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%s: peak RSS: %w", p.name, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %q: %w", p.name, path, line, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no VmHWM in %s", p.name, path)
}
