package main

// The node suite compares push and pull speed of one Outpost node with plain
// distribution, in the same run: one large single-layer image, then many small
// images. Every round starts each registry afresh on an empty data directory, so
// each round pushes into empty storage; the registries take turns going first.

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
	"time"
)

const (
	nodeGoalRatio = 0.95
	largeRepo     = "bench/large"
	smallRepo     = "bench/small"
)

type nodeConfig struct {
	common
	registry string
	small    int
	largeMiB int
}

func parseNodeFlags(args []string) (nodeConfig, error) {
	var cfg nodeConfig
	fs := flag.NewFlagSet("bench node", flag.ContinueOnError)
	cfg.register(fs, 5)
	cfg.small, cfg.largeMiB = 200, 256
	fs.StringVar(&cfg.registry, "registry", defaultTool("registry"), "distribution registry binary, looked for in ./bin, ~/go/bin, then PATH")
	fs.IntVar(&cfg.small, "small", cfg.small, "number of small images")
	fs.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "size of the large layer in MiB")
	quick := fs.Bool("quick", false, "smoke run: --rounds 1 --small 20 --large-mib 16, unless those are given")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if *quick {
		quickDefaults(fs, map[string]quickDefault{"rounds": {&cfg.rounds, 1}, "small": {&cfg.small, 20},
			"large-mib": {&cfg.largeMiB, 16}})
	}
	if cfg.small < 1 || cfg.largeMiB < 1 {
		return cfg, usageError{errors.New("--small and --large-mib must be at least 1")}
	}
	return cfg, cfg.validate()
}

func runNodeSuite(ctx context.Context, args []string) error {
	cfg, err := parseNodeFlags(args)
	if err != nil {
		return err
	}
	if cfg.registry, err = lookTool("registry", cfg.registry); err != nil {
		return err
	}
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	logFile := func(dir string) string {
		if !cfg.keep {
			return ""
		}
		return filepath.Join(dir, "output.log")
	}
	targets := []target{
		{name: "outpost", start: func(ctx context.Context, dir string) (*server, error) {
			o := rootOptions(newAdminToken())
			o.log = logFile(dir)
			return startOutpost(ctx, cfg.outpost, dir, o)
		}},
		{name: "distribution", start: func(ctx context.Context, dir string) (*server, error) {
			return startDistribution(ctx, cfg.registry, dir, logFile(dir))
		}},
	}
	steps := newSteps(cfg)
	res, err := measureTargets(ctx, cfg, work, targets, steps)
	if err != nil {
		return err
	}
	printNodeTable(os.Stdout, cfg, steps, res)
	return nil
}

// measureTargets runs cfg.rounds rounds of steps against every target, each round
// with content of its own, the targets taking turns going first.
func measureTargets(ctx context.Context, cfg nodeConfig, work string, targets []target, steps []step) (results, error) {
	res := results{}
	seed := uint64(time.Now().UnixNano())
	for round := 1; round <= cfg.rounds; round++ {
		w, err := newWorkload(generator{seed: seed, round: round}, cfg)
		if err != nil {
			return nil, err
		}
		order := slices.Clone(targets)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, t := range order {
			dir := filepath.Join(work, fmt.Sprintf("round%d-%s", round, t.name))
			d, err := benchTarget(ctx, t, dir, steps, w, cfg)
			if err != nil {
				return nil, fmt.Errorf("round %d: %s: %w", round, t.name, err)
			}
			res.add(t.name, d)
		}
		printRound(os.Stdout, round, order, steps, res)
	}
	return res, nil
}

// A target is a registry under test, started afresh on an empty directory.
type target struct {
	name  string
	start func(ctx context.Context, dir string) (*server, error)
}

// A step is one measurement; work is what it moves (MiB or images), for throughput.
type step struct {
	name string
	unit string
	work float64
	run  func(ctx context.Context, c *client, w *workload) error
}

func newSteps(cfg nodeConfig) []step {
	large := fmt.Sprintf("%d MiB", cfg.largeMiB)
	small := fmt.Sprintf("%d small", cfg.small)
	mibs, images := float64(cfg.largeMiB), float64(cfg.small)
	return []step{
		{"push " + large, "MiB/s", mibs, func(ctx context.Context, c *client, w *workload) error {
			return c.push(ctx, c.ref(largeRepo, w.large.tag), w.large.img)
		}},
		{"pull " + large, "MiB/s", mibs, func(ctx context.Context, c *client, w *workload) error {
			return c.pull(ctx, c.ref(largeRepo, w.large.tag), w.large.digest)
		}},
		{"push " + small, "images/s", images, func(ctx context.Context, c *client, w *workload) error {
			return c.pushAll(ctx, smallRepo, w.small)
		}},
		{"pull " + small, "images/s", images, func(ctx context.Context, c *client, w *workload) error {
			return c.pullAll(ctx, smallRepo, w.small)
		}},
	}
}

// benchTarget starts t on an empty dir, runs every step against it, then stops it
// and removes dir (unless --keep).
func benchTarget(ctx context.Context, t target, dir string, steps []step, w *workload, cfg nodeConfig) (_ []time.Duration, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	}
	srv, err := t.start(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()

	c, err := newClient(ctx, srv, cfg.jobs)
	if err != nil {
		return nil, err
	}
	defer c.close()
	durations := make([]time.Duration, len(steps))
	for i, s := range steps {
		slog.Info("measuring", "round", w.round, "registry", t.name, "step", s.name)
		start := time.Now()
		if err := s.run(ctx, c, w); err != nil {
			return nil, fmt.Errorf("%s: %w%s", s.name, err, srv.exitReport())
		}
		durations[i] = time.Since(start)
	}
	return durations, nil
}

// workload is one round's content: the same for both registries, new every round.
type workload struct {
	round int
	large image
	small []image
}

func newWorkload(g generator, cfg nodeConfig) (*workload, error) {
	slog.Info("generating content", "round", g.round, "large_mib", cfg.largeMiB, "small", cfg.small)
	w := &workload{round: g.round}
	var err error
	if w.large, err = g.large("large", fmt.Sprintf("round%d", g.round), int64(cfg.largeMiB)*mib); err != nil {
		return nil, err
	}
	if w.small, err = g.small("small", cfg.small); err != nil {
		return nil, err
	}
	return w, nil
}

// results holds, per registry, one duration per round for each step.
type results map[string][][]time.Duration

func (r results) add(target string, durations []time.Duration) {
	r[target] = append(r[target], durations)
}

func (r results) median(target string, step int) time.Duration {
	return medianOf(r[target], func(round []time.Duration) time.Duration { return round[step] })
}

func speed(s step, d time.Duration) float64 { return rate(s.work, d) }

func printRound(out io.Writer, round int, order []target, steps []step, res results) {
	fmt.Fprintf(out, "round %d (%s first)\n", round, order[0].name)
	tw := newTable(out)
	for _, t := range order {
		durations := res[t.name][round-1]
		for i, s := range steps {
			fmt.Fprintf(tw, "  %s\t%s\t%.3f s\t%.1f %s\n", t.name, s.name, durations[i].Seconds(), speed(s, durations[i]), s.unit)
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
}

func printNodeTable(out io.Writer, cfg nodeConfig, steps []step, res results) {
	fmt.Fprintf(out, "goal: outpost >= %.2fx distribution (ratio = outpost speed / distribution speed)\n", nodeGoalRatio)
	fmt.Fprintf(out, "medians of %d round(s); %s/%s, %d CPUs, %d jobs; fresh data directory per registry per round\n\n",
		cfg.rounds, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cfg.jobs)
	tw := newTable(out)
	fmt.Fprintln(tw, "step\tdistribution s\toutpost s\tdistribution\toutpost\tratio")
	for i, s := range steps {
		dist, op := res.median("distribution", i), res.median("outpost", i)
		ratio := dist.Seconds() / op.Seconds()
		mark := ""
		if ratio < nodeGoalRatio {
			mark = "  below goal"
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.1f %s\t%.1f %s\t%.2f%s\n", s.name, dist.Seconds(), op.Seconds(),
			speed(s, dist), s.unit, speed(s, op), s.unit, ratio, mark)
	}
	tw.Flush()
}
