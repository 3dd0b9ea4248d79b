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
//	(c) a bulk copy of many small images that already are at the root: a new
//	    ReadOnly child whose scope holds them is defined, then timed from starting
//	    its process until it lists every tag; against regsync once copying as many
//	    other images from the root to the standalone node. For reference, the same
//	    number of images event-driven: pushed at the root to the first child, timed
//	    from push start until the child lists every tag.
//
// Every round starts a new tree and standalone node on fresh data directories.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"
)

const (
	latencyGoal    = 500 * time.Millisecond
	largeGoalRatio = 1.0 // outpost MiB/s over crane's
	smallGoalRatio = 2.0 // outpost images/s over regsync's, bulk copy

	latencyRepo      = "bench/latency"
	outpostLargeRepo = "big/large"
	eventSmallRepo   = "bench-small/app"
	bulkRepo         = "bulk/app"
	craneRepo        = "crane/large"
	regsyncRepo      = "regsync-small/app"
)

type treeConfig struct {
	common
	clusterFlags
	crane    string
	regsync  string
	latency  int
	largeMiB int
	small    int
}

func parseTreeFlags(args []string) (treeConfig, error) {
	var cfg treeConfig
	fs := flag.NewFlagSet("bench tree", flag.ContinueOnError)
	cfg.common.register(fs, 3)
	cfg.clusterFlags.register(fs, 2*time.Minute)
	cfg.latency, cfg.largeMiB, cfg.small = 50, 256, 200
	fs.StringVar(&cfg.crane, "crane", defaultTool("crane"), "crane binary, looked for in ./bin, ~/go/bin, then PATH")
	fs.StringVar(&cfg.regsync, "regsync", defaultTool("regsync"), "regsync binary, looked for in ./bin, ~/go/bin, then PATH")
	fs.IntVar(&cfg.latency, "latency-images", cfg.latency, "(a) small images pushed one at a time at the leaf")
	fs.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "(b) size of the large layer in MiB")
	fs.IntVar(&cfg.small, "small", cfg.small, "(c) number of small images")
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
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	rounds, err := runRounds(ctx, cfg.common, work, func(ctx context.Context, g generator, dir string) (treeResult, error) {
		return treeRound(ctx, cfg, g, dir)
	}, func(r treeResult) { r.print(os.Stdout, cfg) })
	if err != nil {
		return err
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
	bulk          time.Duration   // (c), new child's process start to all tags listed
	bulkServing   time.Duration   // (c), the part until the new child serves
	regsync       time.Duration   // (c)
	event         time.Duration   // (c) event-driven, push start to all tags at the child
	eventPush     time.Duration   // (c) event-driven, the push part of it
}

// treeContent is one round's images, generated before any node starts.
type treeContent struct {
	warm                           []image
	latency                        []image
	large, craneLarge              image
	bulk, smallRegsync, smallEvent []image
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
	if c.bulk, err = g.small("small-bulk", cfg.small); err != nil {
		return c, err
	}
	if c.smallRegsync, err = g.small("small-regsync", cfg.small); err != nil {
		return c, err
	}
	c.smallEvent, err = g.small("small-event", cfg.small)
	return c, err
}

func treeRound(ctx context.Context, cfg treeConfig, g generator, dir string) (_ treeResult, err error) {
	res := treeResult{round: g.round, outpostFirst: g.round%2 == 1}
	content, err := newTreeContent(g, cfg)
	if err != nil {
		return res, err
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
	// round, so that neither always meets the nodes fuller and busier. The
	// event-driven (c) is for reference and comes last.
	type method struct {
		name string
		run  func(context.Context) error
	}
	steps := []struct {
		name    string
		methods []method
	}{
		{"(b)", []method{{"outpost", func(ctx context.Context) (err error) {
			res.large, err = t.largeOutpost(ctx, content.large)
			return err
		}}, {"crane", func(ctx context.Context) (err error) {
			res.crane, err = t.largeCrane(ctx, content.craneLarge)
			return err
		}}}},
		{"(c)", []method{{"outpost bulk", func(ctx context.Context) (err error) {
			res.bulk, res.bulkServing, err = t.smallBulk(ctx, content.bulk)
			return err
		}}, {"regsync", func(ctx context.Context) (err error) {
			res.regsync, err = t.smallRegsync(ctx, content.smallRegsync)
			return err
		}}}},
		{"(c) event-driven", []method{{"outpost", func(ctx context.Context) (err error) {
			res.event, res.eventPush, err = t.smallEvent(ctx, content.smallEvent)
			return err
		}}}},
	}
	for _, s := range steps {
		ms := s.methods
		if !res.outpostFirst {
			slices.Reverse(ms)
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
// (a), a ReadOnly child of the root for (b) and the event-driven (c), and a
// standalone node as the target of crane and regsync. (c) starts one more child
// of its own.
type tree struct {
	*cluster
	cfg                                       treeConfig
	level1, level2, level3, child, standalone *server
	level3C, childC, standaloneC              *client
}

func startTree(ctx context.Context, cfg treeConfig, dir string) (_ *tree, err error) {
	cl, err := startCluster(ctx, cfg.common, cfg.clusterFlags, dir)
	if err != nil {
		return nil, err
	}
	t := &tree{cluster: cl, cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.stop())
		}
	}()
	if t.level1, err = t.startChild(ctx, childSpec{name: "level1", mode: "ReadWrite", repos: []string{"bench/*"}}); err != nil {
		return nil, err
	}
	if t.level2, err = t.startChild(ctx, childSpec{name: "level2", parent: "level1", mode: "ReadWrite", repos: []string{"bench/*"}}); err != nil {
		return nil, err
	}
	if t.level3, err = t.startChild(ctx, childSpec{name: "level3", parent: "level2", mode: "ReadWrite", repos: []string{"bench/*"}}); err != nil {
		return nil, err
	}
	if t.child, err = t.startChild(ctx, childSpec{name: "child", mode: "ReadOnly", repos: []string{"big/*", "bench-small/*"}}); err != nil {
		return nil, err
	}
	if t.standalone, err = t.startStandalone(ctx, "standalone"); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		c   **client
		srv *server
	}{{&t.level3C, t.level3}, {&t.childC, t.child}, {&t.standaloneC, t.standalone}} {
		if *c.c, err = t.client(ctx, c.srv); err != nil {
			return nil, err
		}
	}
	return t, nil
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
	env, err := dockerConfigEnv(filepath.Join(t.dir, "docker"), t.root, t.standalone)
	if err != nil {
		return 0, err
	}
	d, err := runTool(ctx, "crane", t.cfg.crane, []string{"copy", "--insecure", "--jobs", strconv.Itoa(t.jobs),
		t.rootC.ref(craneRepo, im.tag).String(), t.standaloneC.ref(craneRepo, im.tag).String()}, env, t.toolLog("crane"))
	if err != nil {
		return 0, err
	}
	return d, t.standaloneC.verifyAll(ctx, craneRepo, []image{im})
}

// smallBulk pushes the images at the root, untimed, then defines a new ReadOnly
// child whose scope holds them, and times from starting its process until it lists
// every tag; it also returns the part until the child served. Then, untimed, it
// checks every digest at the child and stops it.
func (t *tree) smallBulk(ctx context.Context, imgs []image) (total, serving time.Duration, err error) {
	if err := t.rootC.pushAll(ctx, bulkRepo, imgs); err != nil {
		return 0, 0, err
	}
	o, err := t.define(ctx, childSpec{name: "bulkcopy", mode: "ReadOnly", repos: []string{"bulk/*"}})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	srv, err := t.start(ctx, "bulkcopy", o)
	if err != nil {
		return 0, 0, err
	}
	serving = time.Since(start)
	c, err := t.client(ctx, srv)
	if err != nil {
		return 0, 0, err
	}
	if err := t.waitListed(ctx, c, srv, bulkRepo, imgs); err != nil {
		return 0, 0, err
	}
	total = time.Since(start)
	if err := c.verifyAll(ctx, bulkRepo, imgs); err != nil {
		return 0, 0, fmt.Errorf("at %s: %w", srv.name, err)
	}
	// Idle, it would still report to the root every few seconds.
	return total, serving, srv.stop()
}

// regsyncConfig copies one repository, every tag, between two plain-http
// registries, with the creds section regsyncCreds writes. regsync copies a
// repository's tags one after another; its parallel setting is about sync entries,
// so it would change nothing here.
const regsyncConfig = `version: 1
%[4]sdefaults:
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
	cfg := fmt.Sprintf(regsyncConfig, t.root.addr, t.standalone.addr, regsyncRepo, regsyncCreds(t.root, t.standalone))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return 0, fmt.Errorf("regsync config: %w", err)
	}
	d, err := runTool(ctx, "regsync", t.cfg.regsync, []string{"once", "-c", cfgPath}, nil, t.toolLog("regsync"))
	if err != nil {
		return 0, err
	}
	return d, t.standaloneC.verifyAll(ctx, regsyncRepo, imgs)
}

// smallEvent pushes the images at the root and times from push start until the
// child lists every tag; it also returns the push part. Then, untimed, it checks
// every digest at the child.
func (t *tree) smallEvent(ctx context.Context, imgs []image) (total, push time.Duration, err error) {
	start := time.Now()
	if err := t.rootC.pushAll(ctx, eventSmallRepo, imgs); err != nil {
		return 0, 0, err
	}
	push = time.Since(start)
	if err := t.waitListed(ctx, t.childC, t.child, eventSmallRepo, imgs); err != nil {
		return 0, 0, err
	}
	total = time.Since(start)
	return total, push, t.childC.verifyAll(ctx, eventSmallRepo, imgs)
}

func (t *tree) toolLog(name string) string {
	if !t.keep {
		return ""
	}
	return filepath.Join(t.dir, name+".log")
}

// Derived figures of a round.

func (r treeResult) latencyP(p float64) time.Duration { return percentile(r.latencies, p) }
func (r treeResult) pushP(p float64) time.Duration    { return percentile(r.latencyPushes, p) }
func (r treeResult) eventAfterPush() time.Duration    { return r.event - r.eventPush }

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
	fmt.Fprintf(tw, "  (c) outpost root -> new child\t%.3f s\t%.1f images/s\t(serving after %.3f s)\n",
		r.bulk.Seconds(), rate(imgs, r.bulk), r.bulkServing.Seconds())
	fmt.Fprintf(tw, "  (c) regsync root -> standalone\t%.3f s\t%.1f images/s\n", r.regsync.Seconds(), rate(imgs, r.regsync))
	fmt.Fprintf(tw, "  (c) outpost event-driven root -> child\t%.3f s\t%.1f images/s\t(push %.3f s, then %.3f s)\n",
		r.event.Seconds(), rate(imgs, r.event), r.eventPush.Seconds(), r.eventAfterPush().Seconds())
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

	fmt.Fprintf(out, "(b), (c) parent -> child: outpost replicates from the root to a ReadOnly child; crane and regsync copy\n"+
		"    other, fresh images root -> standalone ReadWrite node; ratio = outpost speed / tool speed\n")
	fmt.Fprintf(out, "    (b) child big/*: from push completion until the child resolves the tag (HEAD every %s)\n", headPoll)
	fmt.Fprintf(out, "    (c) images already at the root; a new child bulk/* is defined, then timed from starting its process\n"+
		"        until it lists every tag (tag list every %s)\n", listPoll)
	fmt.Fprintf(out, "    (c) event-driven, for reference: child bench-small/*, from push start at the root until it lists every tag\n")
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
	bulk := medianOf(rounds, func(r treeResult) time.Duration { return r.bulk })
	bulkRatio := regsync.Seconds() / bulk.Seconds()
	name = fmt.Sprintf("(c) %d small images", cfg.small)
	fmt.Fprintf(tw, "%s\tregsync once\t%.3f\t%.1f images/s\t\t\n", name, regsync.Seconds(), rate(imgs, regsync))
	fmt.Fprintf(tw, "%s\toutpost, new child\t%.3f\t%.1f images/s\t%.2f\t>= %.2f  %s\n", name, bulk.Seconds(), rate(imgs, bulk),
		bulkRatio, smallGoalRatio, goalMark(bulkRatio >= smallGoalRatio))
	serving := medianOf(rounds, func(r treeResult) time.Duration { return r.bulkServing })
	fmt.Fprintf(tw, "%s\t  of which until it serves\t%.3f\t\t\t\n", name, serving.Seconds())
	event := medianOf(rounds, func(r treeResult) time.Duration { return r.event })
	afterPush := medianOf(rounds, func(r treeResult) time.Duration { return r.eventAfterPush() })
	fmt.Fprintf(tw, "%s\toutpost, event-driven, from push start\t%.3f\t%.1f images/s\t%.2f\t(for reference)\n", name,
		event.Seconds(), rate(imgs, event), regsync.Seconds()/event.Seconds())
	fmt.Fprintf(tw, "%s\t  of which after the push\t%.3f\t%.1f images/s\t%.2f\t(for reference)\n", name,
		afterPush.Seconds(), rate(imgs, afterPush), regsync.Seconds()/afterPush.Seconds())
	tw.Flush()
}
