package main

// The tree suite measures replication between Outpost nodes, each a separate
// process on 127.0.0.1:
//
//	(a) latency up the tree: root <- level1 <- level2 <- level3, all ReadWrite with
//	    bench/*; small images pushed one at a time at level3, each timed from push
//	    start until the root resolves its tag to the pushed digest.
//	(b) one large layer from the root to a ReadOnly child, timed from push completion
//	    until the child resolves the tag; against crane copy of another image of the
//	    same size from the root to a standalone ReadWrite node (the child refuses
//	    pushes, so the tools get a target of their own).
//	(c) many small images from the root to the child, timed from push start until
//	    every tag is in the child's tag list; against regsync once copying as many
//	    other images from the root to the standalone node.
//
// Every round starts a new tree and standalone node on fresh data directories.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	latencyGoal    = 500 * time.Millisecond
	largeGoalRatio = 1.0 // outpost MiB/s over crane's
	smallGoalRatio = 2.0 // outpost images/s over regsync's

	headPoll = 10 * time.Millisecond
	// A tag list is heavier than a HEAD, and the child answers it while replicating;
	// on a small machine polling it every 10 ms would slow down what is measured.
	listPoll = 50 * time.Millisecond

	latencyRepo      = "bench/latency"
	outpostLargeRepo = "big/large"
	outpostSmallRepo = "bench-small/app"
	craneRepo        = "crane/large"
	regsyncRepo      = "regsync-small/app"
)

type treeConfig struct {
	common
	crane    string
	regsync  string
	latency  int
	largeMiB int
	small    int
	timeout  time.Duration
	logLevel string
}

func parseTreeFlags(args []string) (treeConfig, error) {
	var cfg treeConfig
	fs := flag.NewFlagSet("bench tree", flag.ContinueOnError)
	cfg.register(fs, 3)
	cfg.latency, cfg.largeMiB, cfg.small, cfg.timeout = 50, 256, 200, 2*time.Minute
	fs.StringVar(&cfg.crane, "crane", defaultTool("crane"), "crane binary, looked for in ./bin, ~/go/bin, then PATH")
	fs.StringVar(&cfg.regsync, "regsync", defaultTool("regsync"), "regsync binary, looked for in ./bin, ~/go/bin, then PATH")
	fs.IntVar(&cfg.latency, "latency-images", cfg.latency, "(a) small images pushed one at a time at the leaf")
	fs.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "(b) size of the large layer in MiB")
	fs.IntVar(&cfg.small, "small", cfg.small, "(c) number of small images")
	fs.DurationVar(&cfg.timeout, "timeout", cfg.timeout, "longest wait for one replication before the run fails")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "the nodes' log level; with --keep, debug shows each replicated event")
	quick := fs.Bool("quick", false, "smoke run: --rounds 1 --latency-images 10 --large-mib 16 --small 20, unless those are given")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if *quick {
		quickDefaults(fs, map[string]quickDefault{"rounds": {&cfg.rounds, 1}, "latency-images": {&cfg.latency, 10},
			"large-mib": {&cfg.largeMiB, 16}, "small": {&cfg.small, 20}})
	}
	if cfg.latency < 1 || cfg.largeMiB < 1 || cfg.small < 1 || cfg.timeout <= 0 {
		return cfg, usageError{errors.New("--latency-images, --large-mib, --small and --timeout must be positive")}
	}
	return cfg, cfg.validate()
}

func runTreeSuite(ctx context.Context, args []string) error {
	cfg, err := parseTreeFlags(args)
	if err != nil {
		return err
	}
	if cfg.crane, err = lookTool("crane", cfg.crane); err != nil {
		return err
	}
	if cfg.regsync, err = lookTool("regsync", cfg.regsync); err != nil {
		return err
	}
	work, cleanup, err := workDir(cfg.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	if cfg.outpost, err = outpostBinary(ctx, cfg.outpost, work); err != nil {
		return err
	}
	seed := uint64(time.Now().UnixNano())
	var rounds []treeResult
	for round := 1; round <= cfg.rounds; round++ {
		dir := filepath.Join(work, fmt.Sprintf("round%d", round))
		r, err := treeRound(ctx, cfg, generator{seed: seed, round: round}, dir)
		if err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
		rounds = append(rounds, r)
		r.print(os.Stdout, cfg)
	}
	printTreeTable(os.Stdout, cfg, rounds)
	return nil
}

// treeResult is one round's measurements.
type treeResult struct {
	round         int
	outpostFirst  bool            // in (b) and (c)
	latencies     []time.Duration // (a), push start to resolvable at the root
	latencyPushes []time.Duration // (a), the push part of each
	large, crane  time.Duration   // (b)
	small         time.Duration   // (c), push start to all tags at the child
	smallPush     time.Duration   // (c), the push part of it
	regsync       time.Duration   // (c)
}

// treeContent is one round's images, generated before any node starts.
type treeContent struct {
	warm                       []image
	latency                    []image
	large, craneLarge          image
	smallOutpost, smallRegsync []image
}

func newTreeContent(g generator, cfg treeConfig) (c treeContent, err error) {
	slog.Info("generating content", "round", g.round, "latency", cfg.latency, "large_mib", cfg.largeMiB, "small", cfg.small)
	size := int64(cfg.largeMiB) * mib
	tag := fmt.Sprintf("round%d", g.round)
	if c.warm, err = g.small("warm", 3); err != nil {
		return c, err
	}
	if c.latency, err = g.small("latency", cfg.latency); err != nil {
		return c, err
	}
	if c.large, err = g.large("large-outpost", tag, size); err != nil {
		return c, err
	}
	if c.craneLarge, err = g.large("large-crane", tag, size); err != nil {
		return c, err
	}
	if c.smallOutpost, err = g.small("small-outpost", cfg.small); err != nil {
		return c, err
	}
	c.smallRegsync, err = g.small("small-regsync", cfg.small)
	return c, err
}

func treeRound(ctx context.Context, cfg treeConfig, g generator, dir string) (_ treeResult, err error) {
	res := treeResult{round: g.round, outpostFirst: g.round%2 == 1}
	content, err := newTreeContent(g, cfg)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("round directory: %w", err)
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	}
	t, err := startTree(ctx, cfg, dir)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, t.stop()) }()

	if err := t.warmUp(ctx, content.warm); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	slog.Info("measuring", "round", g.round, "step", "(a) latency level3 -> root", "images", cfg.latency)
	if res.latencies, res.latencyPushes, err = t.latencyUp(ctx, content.latency); err != nil {
		return res, fmt.Errorf("(a): %w", err)
	}

	// (b) and (c): Outpost and the peer tool take turns going first, round by
	// round, so that neither always meets the nodes fuller and busier.
	type method struct {
		name string
		run  func(context.Context) error
	}
	steps := []struct {
		name    string
		methods [2]method
	}{
		{"(b)", [2]method{{"outpost", func(ctx context.Context) (err error) {
			res.large, err = t.largeOutpost(ctx, content.large)
			return err
		}}, {"crane", func(ctx context.Context) (err error) {
			res.crane, err = t.largeCrane(ctx, content.craneLarge)
			return err
		}}}},
		{"(c)", [2]method{{"outpost", func(ctx context.Context) (err error) {
			res.small, res.smallPush, err = t.smallOutpost(ctx, content.smallOutpost)
			return err
		}}, {"regsync", func(ctx context.Context) (err error) {
			res.regsync, err = t.smallRegsync(ctx, content.smallRegsync)
			return err
		}}}},
	}
	for _, s := range steps {
		ms := s.methods
		if !res.outpostFirst {
			ms[0], ms[1] = ms[1], ms[0]
		}
		for _, m := range ms {
			slog.Info("measuring", "round", g.round, "step", s.name, "method", m.name)
			if err := m.run(ctx); err != nil {
				return res, fmt.Errorf("%s %s: %w", s.name, m.name, err)
			}
		}
	}
	return res, nil
}

// tree is one round's processes: the chain root <- level1 <- level2 <- level3 for
// (a), a ReadOnly child of the root for (b) and (c), and a standalone node as the
// target of crane and regsync. Each has a client.
type tree struct {
	cfg   treeConfig
	dir   string
	token string

	root, level1, level2, level3, child, standalone *server
	started                                         []*server

	rootC, level3C, childC, standaloneC *client
}

func startTree(ctx context.Context, cfg treeConfig, dir string) (_ *tree, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	t := &tree{cfg: cfg, dir: dir, token: "bench-" + hex.EncodeToString(b[:])}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.stop())
		}
	}()
	if t.root, err = t.start(ctx, "root", outpostOptions{
		args: []string{"--name", "root", "--log-level", cfg.logLevel},
		env:  []string{"OUTPOST_ADMIN_TOKEN=" + t.token},
	}); err != nil {
		return nil, err
	}
	// A child's settings need its parent running, so define and start in order.
	if t.level1, err = t.startChild(ctx, "level1", "", "ReadWrite", "bench/*"); err != nil {
		return nil, err
	}
	if t.level2, err = t.startChild(ctx, "level2", "level1", "ReadWrite", "bench/*"); err != nil {
		return nil, err
	}
	if t.level3, err = t.startChild(ctx, "level3", "level2", "ReadWrite", "bench/*"); err != nil {
		return nil, err
	}
	if t.child, err = t.startChild(ctx, "child", "", "ReadOnly", "big/*", "bench-small/*"); err != nil {
		return nil, err
	}
	if t.standalone, err = t.start(ctx, "standalone", outpostOptions{args: []string{"--name", "standalone", "--log-level", cfg.logLevel}}); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		c   **client
		srv *server
	}{{&t.rootC, t.root}, {&t.level3C, t.level3}, {&t.childC, t.child}, {&t.standaloneC, t.standalone}} {
		if *c.c, err = newClient(ctx, c.srv.addr, cfg.jobs); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// start runs one node with its data and output in dir/name.
func (t *tree) start(ctx context.Context, name string, o outpostOptions) (*server, error) {
	dir := filepath.Join(t.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: data directory: %w", name, err)
	}
	o.name = name
	if t.cfg.keep {
		o.log = filepath.Join(dir, "output.log")
	}
	srv, err := startOutpost(ctx, t.cfg.outpost, dir, o)
	if err != nil {
		return nil, err
	}
	t.started = append(t.started, srv)
	return srv, nil
}

// startChild defines a node at the root with the CLI and starts it with its
// connection string.
func (t *tree) startChild(ctx context.Context, name, parent, mode string, repos ...string) (*server, error) {
	args := []string{"node", "create", name, "--mode", mode, "--log-level", t.cfg.logLevel}
	if parent != "" {
		args = append(args, "--parent", parent)
	}
	for _, r := range repos {
		args = append(args, "--repository", r)
	}
	if _, err := t.cli(ctx, args...); err != nil {
		return nil, err
	}
	cs, err := t.cli(ctx, "node", "get-settings", name)
	if err != nil {
		return nil, err
	}
	return t.start(ctx, name, outpostOptions{env: []string{"OUTPOST_CONNECTION_STRING=" + strings.TrimSpace(cs)}})
}

// cli runs the outpost CLI against the root with the admin token.
func (t *tree) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, t.cfg.outpost, args...)
	cmd.Env = append(childEnv(), "OUTPOST_SERVER=http://"+t.root.addr, "OUTPOST_TOKEN="+t.token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("outpost %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// stop stops the processes in reverse order, leaves first, and closes the clients.
func (t *tree) stop() error {
	var errs []error
	for _, c := range []*client{t.rootC, t.level3C, t.childC, t.standaloneC} {
		if c != nil {
			c.close()
		}
	}
	for _, s := range slices.Backward(t.started) {
		errs = append(errs, s.stop())
	}
	return errors.Join(errs...)
}

// warmUp sends one image over every path a measurement uses, so that no
// measurement pays for a link's or a repository's first use.
func (t *tree) warmUp(ctx context.Context, imgs []image) error {
	slog.Info("warming up")
	paths := []struct {
		from, to *client
		toSrv    *server
		repo     string
	}{
		{t.level3C, t.rootC, t.root, "bench/warm"},
		{t.rootC, t.childC, t.child, "big/warm"},
		{t.standaloneC, t.standaloneC, t.standalone, "warm/warm"},
	}
	for i, p := range paths {
		im := imgs[i]
		if err := p.from.push(ctx, p.from.ref(p.repo, im.tag), im.img); err != nil {
			return err
		}
		if err := t.waitResolves(ctx, p.to, p.toSrv, p.repo, im); err != nil {
			return err
		}
	}
	return nil
}

// waitResolves polls a node until the image's tag resolves to its digest.
func (t *tree) waitResolves(ctx context.Context, c *client, srv *server, repo string, im image) error {
	err := poll(ctx, headPoll, t.cfg.timeout, func(ctx context.Context) (bool, string, error) {
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

// latencyUp pushes the images one at a time at level3 and times each from push
// start until the root resolves it; it also returns the push part of each.
func (t *tree) latencyUp(ctx context.Context, imgs []image) (latencies, pushes []time.Duration, err error) {
	for _, im := range imgs {
		start := time.Now()
		if err := t.level3C.push(ctx, t.level3C.ref(latencyRepo, im.tag), im.img); err != nil {
			return nil, nil, err
		}
		pushes = append(pushes, time.Since(start))
		if err := t.waitResolves(ctx, t.rootC, t.root, latencyRepo, im); err != nil {
			return nil, nil, err
		}
		latencies = append(latencies, time.Since(start))
	}
	return latencies, pushes, nil
}

// largeOutpost pushes the image at the root and times from push completion until
// the child resolves it; then, untimed, it pulls the whole layer from the child.
func (t *tree) largeOutpost(ctx context.Context, im image) (time.Duration, error) {
	if err := t.rootC.push(ctx, t.rootC.ref(outpostLargeRepo, im.tag), im.img); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := t.waitResolves(ctx, t.childC, t.child, outpostLargeRepo, im); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if err := t.childC.pull(ctx, t.childC.ref(outpostLargeRepo, im.tag), im.digest); err != nil {
		return 0, fmt.Errorf("at %s: %w", t.child.name, err)
	}
	return d, nil
}

// largeCrane pushes the image at the root, untimed, and times crane copy from the
// root to the standalone node; then it checks the digest there.
func (t *tree) largeCrane(ctx context.Context, im image) (time.Duration, error) {
	if err := t.rootC.push(ctx, t.rootC.ref(craneRepo, im.tag), im.img); err != nil {
		return 0, err
	}
	d, err := runTool(ctx, "crane", t.cfg.crane, []string{"copy", "--insecure", "--jobs", strconv.Itoa(t.cfg.jobs),
		t.rootC.ref(craneRepo, im.tag).String(), t.standaloneC.ref(craneRepo, im.tag).String()}, t.toolLog("crane"))
	if err != nil {
		return 0, err
	}
	return d, t.standaloneC.verifyAll(ctx, craneRepo, []image{im})
}

// smallOutpost pushes the images at the root and times from push start until the
// child lists every tag; it also returns the push part. Then, untimed, it checks
// every digest at the child.
func (t *tree) smallOutpost(ctx context.Context, imgs []image) (total, push time.Duration, err error) {
	start := time.Now()
	if err := t.rootC.pushAll(ctx, outpostSmallRepo, imgs); err != nil {
		return 0, 0, err
	}
	push = time.Since(start)
	want := make([]string, len(imgs))
	for i, im := range imgs {
		want[i] = im.tag
	}
	err = poll(ctx, listPoll, t.cfg.timeout, func(ctx context.Context) (bool, string, error) {
		tags, err := t.childC.tags(ctx, outpostSmallRepo)
		if err != nil {
			return false, "", err
		}
		n := 0
		for _, tag := range want {
			if slices.Contains(tags, tag) {
				n++
			}
		}
		return n == len(want), fmt.Sprintf("%d of %d tags listed", n, len(want)), nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%s at %s: %w%s", t.childC.registry.Repo(outpostSmallRepo), t.child.name, err, t.child.lastOutput())
	}
	total = time.Since(start)
	return total, push, t.childC.verifyAll(ctx, outpostSmallRepo, imgs)
}

// regsyncConfig copies one repository, every tag, between two plain-http
// registries. regsync copies a repository's tags one after another; its parallel
// setting is about sync entries, so it would change nothing here.
const regsyncConfig = `version: 1
creds:
  - registry: %[1]s
    tls: disabled
  - registry: %[2]s
    tls: disabled
defaults:
  skipDockerConfig: true
sync:
  - source: %[1]s/%[3]s
    target: %[2]s/%[3]s
    type: repository
`

// smallRegsync pushes the images at the root, untimed, and times regsync once
// copying them to the standalone node; then it checks every digest there.
func (t *tree) smallRegsync(ctx context.Context, imgs []image) (time.Duration, error) {
	if err := t.rootC.pushAll(ctx, regsyncRepo, imgs); err != nil {
		return 0, err
	}
	cfgPath := filepath.Join(t.dir, "regsync.yml")
	cfg := fmt.Sprintf(regsyncConfig, t.root.addr, t.standalone.addr, regsyncRepo)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return 0, fmt.Errorf("regsync config: %w", err)
	}
	d, err := runTool(ctx, "regsync", t.cfg.regsync, []string{"once", "-c", cfgPath}, t.toolLog("regsync"))
	if err != nil {
		return 0, err
	}
	return d, t.standaloneC.verifyAll(ctx, regsyncRepo, imgs)
}

func (t *tree) toolLog(name string) string {
	if !t.cfg.keep {
		return ""
	}
	return filepath.Join(t.dir, name+".log")
}

// Derived figures of a round.

func (r treeResult) latencyP(p float64) time.Duration { return percentile(r.latencies, p) }
func (r treeResult) pushP(p float64) time.Duration    { return percentile(r.latencyPushes, p) }
func (r treeResult) smallAfterPush() time.Duration    { return r.small - r.smallPush }

func (r treeResult) print(out io.Writer, cfg treeConfig) {
	first := "outpost"
	if !r.outpostFirst {
		first = "crane/regsync"
	}
	fmt.Fprintf(out, "round %d (%s first in (b) and (c))\n", r.round, first)
	tw := newTable(out)
	fmt.Fprintf(tw, "  (a) level3 -> root\tp50 %.3f s\tp95 %.3f s\tmax %.3f s\tpush at level3 p50 %.3f s\n",
		r.latencyP(50).Seconds(), r.latencyP(95).Seconds(), r.latencyP(100).Seconds(), r.pushP(50).Seconds())
	mibs, imgs := float64(cfg.largeMiB), float64(cfg.small)
	fmt.Fprintf(tw, "  (b) outpost root -> child\t%.3f s\t%.1f MiB/s\n", r.large.Seconds(), rate(mibs, r.large))
	fmt.Fprintf(tw, "  (b) crane root -> standalone\t%.3f s\t%.1f MiB/s\n", r.crane.Seconds(), rate(mibs, r.crane))
	fmt.Fprintf(tw, "  (c) outpost root -> child\t%.3f s\t%.1f images/s\t(push %.3f s, then %.3f s)\n",
		r.small.Seconds(), rate(imgs, r.small), r.smallPush.Seconds(), r.smallAfterPush().Seconds())
	fmt.Fprintf(tw, "  (c) regsync root -> standalone\t%.3f s\t%.1f images/s\n", r.regsync.Seconds(), rate(imgs, r.regsync))
	tw.Flush()
	fmt.Fprintln(out)
}

func printTreeTable(out io.Writer, cfg treeConfig, rounds []treeResult) {
	fmt.Fprintf(out, "tree suite: medians of %d round(s); %s/%s, %d CPUs, %d jobs; new nodes on fresh data directories every round\n\n",
		cfg.rounds, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cfg.jobs)

	fmt.Fprintf(out, "(a) latency up the tree: root <- level1 <- level2 <- level3 (ReadWrite, bench/*); %d small images pushed\n"+
		"    one at a time at level3, from push start until the root resolves the tag (HEAD every %s)\n", cfg.latency, headPoll)
	tw := newTable(out)
	fmt.Fprintln(tw, "measure\tp50 s\tp95 s\tmax s\tgoal")
	p50 := medianOf(rounds, func(r treeResult) time.Duration { return r.latencyP(50) })
	fmt.Fprintf(tw, "push at level3 -> resolvable at root\t%.3f\t%.3f\t%.3f\tp50 <= %.2f s  %s\n", p50.Seconds(),
		medianOf(rounds, func(r treeResult) time.Duration { return r.latencyP(95) }).Seconds(),
		medianOf(rounds, func(r treeResult) time.Duration { return r.latencyP(100) }).Seconds(),
		latencyGoal.Seconds(), goalMark(p50 <= latencyGoal))
	fmt.Fprintf(tw, "  of which the push at level3\t%.3f\t%.3f\t%.3f\t\n",
		medianOf(rounds, func(r treeResult) time.Duration { return r.pushP(50) }).Seconds(),
		medianOf(rounds, func(r treeResult) time.Duration { return r.pushP(95) }).Seconds(),
		medianOf(rounds, func(r treeResult) time.Duration { return r.pushP(100) }).Seconds())
	tw.Flush()
	fmt.Fprintln(out)

	fmt.Fprintf(out, "(b), (c) parent -> child: outpost replicates root -> child (ReadOnly, big/* bench-small/*);\n"+
		"    crane and regsync copy other, fresh images root -> standalone ReadWrite node; ratio = outpost speed / tool speed\n")
	fmt.Fprintf(out, "    (b) outpost from push completion until the child resolves the tag (HEAD every %s)\n", headPoll)
	fmt.Fprintf(out, "    (c) outpost from push start until the child lists every tag (tag list every %s)\n", listPoll)
	tw = newTable(out)
	fmt.Fprintln(tw, "transfer\tmethod\ts\tspeed\tratio\tgoal")
	mibs, imgs := float64(cfg.largeMiB), float64(cfg.small)
	crane := medianOf(rounds, func(r treeResult) time.Duration { return r.crane })
	large := medianOf(rounds, func(r treeResult) time.Duration { return r.large })
	largeRatio := crane.Seconds() / large.Seconds()
	name := fmt.Sprintf("(b) %d MiB, one layer", cfg.largeMiB)
	fmt.Fprintf(tw, "%s\tcrane copy\t%.3f\t%.1f MiB/s\t\t\n", name, crane.Seconds(), rate(mibs, crane))
	fmt.Fprintf(tw, "%s\toutpost\t%.3f\t%.1f MiB/s\t%.2f\t>= %.2f  %s\n", name, large.Seconds(), rate(mibs, large),
		largeRatio, largeGoalRatio, goalMark(largeRatio >= largeGoalRatio))

	regsync := medianOf(rounds, func(r treeResult) time.Duration { return r.regsync })
	small := medianOf(rounds, func(r treeResult) time.Duration { return r.small })
	afterPush := medianOf(rounds, func(r treeResult) time.Duration { return r.smallAfterPush() })
	smallRatio := regsync.Seconds() / small.Seconds()
	name = fmt.Sprintf("(c) %d small images", cfg.small)
	fmt.Fprintf(tw, "%s\tregsync once\t%.3f\t%.1f images/s\t\t\n", name, regsync.Seconds(), rate(imgs, regsync))
	fmt.Fprintf(tw, "%s\toutpost\t%.3f\t%.1f images/s\t%.2f\t>= %.2f  %s\n", name, small.Seconds(), rate(imgs, small),
		smallRatio, smallGoalRatio, goalMark(smallRatio >= smallGoalRatio))
	fmt.Fprintf(tw, "%s\t  outpost after push\t%.3f\t%.1f images/s\t%.2f\t(for reference)\n", name, afterPush.Seconds(),
		rate(imgs, afterPush), regsync.Seconds()/afterPush.Seconds())
	tw.Flush()
}
