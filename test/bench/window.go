package main

// The window suite measures what a sync window does to replication, root to a
// ReadOnly child, each a separate process on 127.0.0.1:
//
//	(1) many tags, each moved several times at the root while the child's window is
//	    closed (the child's clock is moved with --clock-offset-file); then the window
//	    opens, and the child is timed until it lists every tag; the bytes it moved
//	    over its link are compared with the bytes of the images it must end up with.
//	(2) one large single-layer image from the root to a fresh child whose window is
//	    always open, timed from push completion until the child resolves the tag;
//	    the child's peak RSS afterwards.
//
// Every round starts new nodes on fresh data directories.

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
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

const (
	convergeGoal   = 30 * time.Second
	bytesGoalRatio = 1.01 // bytes moved over unique bytes
	peakRSSGoal    = 150 * mib

	windowSchedule = "0 2 * * *"
	windowLength   = "PT2H"
	windowRepo     = "win/app"
	bigWindowRepo  = "bigwin/large"

	linkBytesMetric = "outpost_link_bytes_total"
)

type windowConfig struct {
	common
	clusterFlags
	tags       int
	moves      int
	pushJobs   int
	largeMiB   int
	freshChild bool
	roundRobin bool
}

func parseWindowFlags(args []string) (windowConfig, error) {
	var cfg windowConfig
	fs := flag.NewFlagSet("bench window", flag.ContinueOnError)
	cfg.common.register(fs, 1)
	cfg.clusterFlags.register(fs, 5*time.Minute)
	cfg.tags, cfg.moves, cfg.pushJobs, cfg.largeMiB = 1000, 10, 8, 1024
	fs.IntVar(&cfg.tags, "tags", cfg.tags, "(1) tags moved behind the closed window")
	fs.IntVar(&cfg.moves, "moves", cfg.moves, "(1) pushes of a new image to each tag")
	fs.IntVar(&cfg.pushJobs, "push-jobs", cfg.pushJobs, "(1) tags pushed at once (the moves of one tag go in order)")
	fs.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "(2) size of the large layer in MiB")
	fs.BoolVar(&cfg.freshChild, "fresh-child", false, "(1) start the child outside its window, so that its first reconcile of\n"+
		"its scope, which a new child does, runs in the measured window, alongside the drain")
	fs.BoolVar(&cfg.roundRobin, "round-robin", false, "(1) push the first move of every tag, then the second, and so on, so that\n"+
		"the events of one tag spread over the whole queue (default: each tag's moves one after another)")
	quick := fs.Bool("quick", false, "smoke run: --tags 100 --large-mib 64, unless those are given")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if *quick {
		quickDefaults(fs, map[string]quickDefault{"tags": {&cfg.tags, 100}, "large-mib": {&cfg.largeMiB, 64}})
	}
	if cfg.tags < 1 || cfg.moves < 1 || cfg.pushJobs < 1 || cfg.largeMiB < 1 || cfg.timeout <= 0 {
		return cfg, usageError{errors.New("--tags, --moves, --push-jobs, --large-mib and --timeout must be positive")}
	}
	return cfg, cfg.validate()
}

func runWindowSuite(ctx context.Context, args []string) error {
	cfg, err := parseWindowFlags(args)
	if err != nil {
		return err
	}
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	rounds, err := runRounds(ctx, cfg.common, work, func(ctx context.Context, g generator, dir string) (windowResult, error) {
		return windowRound(ctx, cfg, g, dir)
	}, func(r windowResult) { r.print(os.Stdout, cfg) })
	if err != nil {
		return err
	}
	printWindowTable(os.Stdout, cfg, rounds)
	return nil
}

// windowResult is one round's measurements.
type windowResult struct {
	round int
	// (1)
	pushes    time.Duration // all pushes at the root, untimed in the goals
	waiting   uint64        // messages waiting for the child at the root before the window opened
	converged time.Duration // window opened -> every tag listed at the child
	drained   time.Duration // window opened -> a report with nothing waiting at the root; 0 if not seen
	unique    int64         // bytes of the images the child must end up with
	moved     int64         // the child's downstream link bytes while the window was open
	movedOK   bool          // whether the child counts its link bytes
	// (2)
	largePush  time.Duration // the push at the root
	large      time.Duration // push completion -> resolvable at the child
	startRSS   int64         // the child's peak RSS before the push
	peakRSS    int64         // the child's peak RSS once it has the image
	largeBytes int64         // the image's bytes
}

// windowContent is one round's images: moves[i] are the images pushed to tag i, in
// order; the last is the one the child must end up with.
type windowContent struct {
	moves [][]image
	large image
}

func newWindowContent(g generator, cfg windowConfig) (c windowContent, err error) {
	slog.Info("generating content", "round", g.round, "tags", cfg.tags, "moves", cfg.moves, "large_mib", cfg.largeMiB)
	imgs, err := g.small("window", cfg.tags*cfg.moves)
	if err != nil {
		return c, err
	}
	for i := range cfg.tags {
		moves := imgs[i*cfg.moves : (i+1)*cfg.moves : (i+1)*cfg.moves]
		for m := range moves {
			moves[m].tag = fmt.Sprintf("t-%04d", i)
		}
		c.moves = append(c.moves, moves)
	}
	c.large, err = g.large("window-large", fmt.Sprintf("round%d", g.round), int64(cfg.largeMiB)*mib)
	return c, err
}

// finals are the images the tags end up with.
func (c windowContent) finals() []image {
	finals := make([]image, len(c.moves))
	for i, moves := range c.moves {
		finals[i] = moves[len(moves)-1]
	}
	return finals
}

func windowRound(ctx context.Context, cfg windowConfig, g generator, dir string) (res windowResult, err error) {
	res.round = g.round
	content, err := newWindowContent(g, cfg)
	if err != nil {
		return res, err
	}
	cl, err := startCluster(ctx, cfg.common, cfg.clusterFlags, dir)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, cl.stop()) }()
	if err := bufferedMoves(ctx, cl, cfg, content, &res); err != nil {
		return res, fmt.Errorf("(1): %w", err)
	}
	if err := largeCopy(ctx, cl, content.large, &res); err != nil {
		return res, fmt.Errorf("(2): %w", err)
	}
	return res, nil
}

// bufferedMoves is (1): the moves pushed at the root behind the child's closed
// window, then the window opened.
func bufferedMoves(ctx context.Context, cl *cluster, cfg windowConfig, content windowContent, res *windowResult) error {
	finals := content.finals()
	for _, im := range finals {
		n, err := im.size()
		if err != nil {
			return err
		}
		res.unique += n
	}

	clock := fakeClock{file: filepath.Join(cl.dir, "clock-offset"), day0: day0()}
	child, childC, err := startWindowChild(ctx, cl, cfg.freshChild, clock)
	if err != nil {
		return err
	}

	slog.Info("pushing behind the closed window", "round", res.round, "tags", cfg.tags, "moves", cfg.moves, "at_once", cfg.pushJobs)
	start := time.Now()
	if err := pushMoves(ctx, cl.rootC, cfg.pushJobs, content.moves, cfg.roundRobin); err != nil {
		return err
	}
	res.pushes = time.Since(start)
	tags, err := childC.tags(ctx, windowRepo)
	if err != nil {
		return err
	}
	if len(tags) > 0 {
		return fmt.Errorf("%d tags moved to %s while its window was closed", len(tags), child.name)
	}
	pushes := uint64(cfg.tags * cfg.moves)
	st, err := cl.waitStatus(ctx, child.name, time.Now(), fmt.Sprintf("%d messages waiting downstream", pushes), func(st nodeStatus) bool {
		return !st.WindowOpen && st.pending("downstream") >= pushes
	})
	if err != nil {
		return err
	}
	res.waiting = st.pending("downstream")
	// A counter has no sample for a direction nothing has moved in yet: 0.
	before, _, err := child.counter(ctx, linkBytesMetric, `direction="downstream"`)
	if err != nil {
		return err
	}

	slog.Info("measuring", "round", res.round, "step", "(1) window opens", "waiting", res.waiting)
	if err := clock.set(1, windowOpen); err != nil {
		return err
	}
	start = time.Now()
	if err := cl.waitListed(ctx, childC, child, windowRepo, finals); err != nil {
		return err
	}
	res.converged = time.Since(start)
	if err := childC.verifyAll(ctx, windowRepo, finals); err != nil {
		return fmt.Errorf("at %s: %w", child.name, err)
	}

	// What moves after the tags are listed counts too: wait for the outbox to drain.
	st, err = cl.waitStatus(ctx, child.name, time.Now(), "nothing waiting downstream", func(st nodeStatus) bool {
		return st.pending("downstream") == 0
	})
	if err != nil {
		slog.Warn("bytes moved are counted without the outbox drained", "err", err)
	} else {
		res.drained = st.Reported.Sub(start)
	}
	after, ok, err := child.counter(ctx, linkBytesMetric, `direction="downstream"`)
	if err != nil {
		return err
	}
	res.moved, res.movedOK = int64(after-before), ok
	// Idle, it would still report to the root every few seconds.
	return child.stop()
}

// Times of day by the child's clock: in its window and outside.
const (
	windowOpen   = 2*time.Hour + 30*time.Minute
	windowClosed = 12 * time.Hour
)

// startWindowChild starts (1)'s child, with its window closed by clock once it
// reports. A new child reconciles its scope in its first window: unless fresh, that
// window comes first, before anything is pushed, so that the measured one moves
// what was buffered, no more.
func startWindowChild(ctx context.Context, cl *cluster, fresh bool, clock fakeClock) (*server, *client, error) {
	first := windowOpen
	if fresh {
		first = windowClosed
	}
	if err := clock.set(0, first); err != nil {
		return nil, nil, err
	}
	o, err := cl.define(ctx, childSpec{name: "window", mode: "ReadOnly", repos: []string{"win/*"},
		create: []string{"--sync-schedule", windowSchedule, "--sync-window", windowLength},
		serve:  []string{"--clock-offset-file", clock.file}})
	if err != nil {
		return nil, nil, err
	}
	o.await = []string{"reconciled"}
	child, err := cl.start(ctx, "window", o)
	if err != nil {
		return nil, nil, err
	}
	childC, err := cl.client(ctx, child)
	if err != nil {
		return nil, nil, err
	}
	if !fresh {
		if err := child.await(ctx, "reconciled", cl.timeout); err != nil {
			return nil, nil, err
		}
		if err := clock.set(0, windowClosed); err != nil {
			return nil, nil, err
		}
	}
	closed := time.Now()
	if _, err := cl.waitStatus(ctx, child.name, closed, "its window closed", func(st nodeStatus) bool {
		return !st.WindowOpen
	}); err != nil {
		return nil, nil, err
	}
	return child, childC, nil
}

// pushMoves pushes each tag's images in order, jobs at once: each tag's one after
// another, tags in parallel; or, roundRobin, every tag's first, then every tag's
// second, and so on.
func pushMoves(ctx context.Context, c *client, jobs int, moves [][]image, roundRobin bool) error {
	var batches [][][]image // pushed one after another; the tags of one in parallel
	if roundRobin {
		for m := range moves[0] {
			batch := make([][]image, len(moves))
			for i, tag := range moves {
				batch[i] = tag[m : m+1]
			}
			batches = append(batches, batch)
		}
	} else {
		batches = [][][]image{moves}
	}
	total := len(moves) * len(moves[0])
	var done atomic.Int64
	for _, batch := range batches {
		g, ctx := errgroup.WithContext(ctx)
		g.SetLimit(jobs)
		for _, tag := range batch {
			g.Go(func() error {
				for _, im := range tag {
					if err := c.push(ctx, c.ref(windowRepo, im.tag), im.img); err != nil {
						return err
					}
					if n := done.Add(1); n%int64(max(1, total/10)) == 0 {
						slog.Info("pushed", "images", n, "of", total)
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// largeCopy is (2): a fresh child with an always open window; the large image
// pushed at the root, timed from push completion until the child resolves it.
func largeCopy(ctx context.Context, cl *cluster, im image, res *windowResult) error {
	var err error
	if res.largeBytes, err = im.size(); err != nil {
		return err
	}
	child, err := cl.startChild(ctx, childSpec{name: "bigwin", mode: "ReadOnly", repos: []string{"bigwin/*"}})
	if err != nil {
		return err
	}
	childC, err := cl.client(ctx, child)
	if err != nil {
		return err
	}
	if res.startRSS, err = child.peakRSS(); err != nil {
		return err
	}
	slog.Info("measuring", "round", res.round, "step", "(2) large copy")
	start := time.Now()
	if err := cl.rootC.push(ctx, cl.rootC.ref(bigWindowRepo, im.tag), im.img); err != nil {
		return err
	}
	res.largePush = time.Since(start)
	start = time.Now()
	if err := cl.waitResolves(ctx, childC, child, bigWindowRepo, im); err != nil {
		return err
	}
	res.large = time.Since(start)
	if res.peakRSS, err = child.peakRSS(); err != nil {
		return err
	}
	if err := childC.pull(ctx, childC.ref(bigWindowRepo, im.tag), im.digest); err != nil {
		return fmt.Errorf("at %s: %w", child.name, err)
	}
	return nil
}

// fakeClock moves a node's sync-window clock: the node adds the duration in file
// (--clock-offset-file) to its clock, and reads the file continuously.
type fakeClock struct {
	file string
	day0 time.Time // midnight UTC of the fake day 0
}

// day0 is ten days from now at midnight UTC.
func day0() time.Time {
	now := time.Now().UTC()
	return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 10)
}

// set makes the clock read the given day, at the given time after midnight UTC,
// from now on. The file is replaced at once, so that the node never reads half of it.
func (c fakeClock) set(day int, at time.Duration) error {
	want := c.day0.AddDate(0, 0, day).Add(at)
	tmp := c.file + ".new"
	if err := os.WriteFile(tmp, []byte(time.Until(want).String()), 0o600); err != nil {
		return fmt.Errorf("clock offset: %w", err)
	}
	if err := os.Rename(tmp, c.file); err != nil {
		return fmt.Errorf("clock offset: %w", err)
	}
	return nil
}

// Derived figures of a round.

func (r windowResult) eventsPerSecond(cfg windowConfig) float64 {
	return rate(float64(cfg.tags*cfg.moves), r.converged)
}
func (r windowResult) bytesRatio() float64 { return float64(r.moved) / float64(r.unique) }
func (r windowResult) largeMiBs() float64  { return rate(float64(r.largeBytes)/mib, r.large) }

func (r windowResult) print(out io.Writer, cfg windowConfig) {
	fmt.Fprintf(out, "round %d\n", r.round)
	tw := newTable(out)
	moved := fmt.Sprintf("bytes moved n/a, unique %.2f MiB", float64(r.unique)/mib)
	if r.movedOK {
		moved = fmt.Sprintf("bytes moved / unique %.3f (%.2f / %.2f MiB)", r.bytesRatio(), float64(r.moved)/mib, float64(r.unique)/mib)
	}
	fmt.Fprintf(tw, "  (1) %d tags x %d moves\tpushed in %.1f s\t%d waiting\twindow open -> converged %.3f s\t%.0f events/s\t%s\n",
		cfg.tags, cfg.moves, r.pushes.Seconds(), r.waiting, r.converged.Seconds(), r.eventsPerSecond(cfg), moved)
	fmt.Fprintf(tw, "  (2) %d MiB root -> fresh child\tpushed in %.1f s\t\tthen %.3f s\t%.1f MiB/s\tpeak RSS %.1f MiB (%.1f MiB before)\n",
		cfg.largeMiB, r.largePush.Seconds(), r.large.Seconds(), r.largeMiBs(), float64(r.peakRSS)/mib, float64(r.startRSS)/mib)
	tw.Flush()
	fmt.Fprintln(out)
}

func printWindowTable(out io.Writer, cfg windowConfig, rounds []windowResult) {
	fmt.Fprintf(out, "window suite: medians of %d round(s); %s/%s, %d CPUs; new nodes on fresh data directories every round\n\n",
		cfg.rounds, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())

	fmt.Fprintf(out, "(1) %d tags x %d moves pushed at the root (%d tags at once, untimed) while the window of a child\n"+
		"    (ReadOnly, win/*, %q %s) is closed; then its clock is moved into the window: from then until it\n"+
		"    lists every tag (tag list every %s; then every digest checked, untimed)\n",
		cfg.tags, cfg.moves, cfg.pushJobs, windowSchedule, windowLength, listPoll)
	if cfg.roundRobin {
		fmt.Fprintf(out, "    --round-robin: every tag's first move was pushed, then every tag's second, and so on\n")
	}
	if cfg.freshChild {
		fmt.Fprintf(out, "    --fresh-child: the child's first reconcile of its scope runs in that window too\n")
	} else {
		fmt.Fprintf(out, "    the child had a window of its own before the pushes, in which it reconciled its (empty) scope\n")
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "measure\tvalue\tgoal")
	converged := medianOf(rounds, func(r windowResult) time.Duration { return r.converged })
	fmt.Fprintf(tw, "window open -> converged\t%.3f s\t<= %.0f s  %s\n", converged.Seconds(), convergeGoal.Seconds(),
		goalMark(converged <= convergeGoal))
	fmt.Fprintf(tw, "events/s\t%.0f\t\n", rate(float64(cfg.tags*cfg.moves), converged))
	movedOK := true
	for _, r := range rounds {
		movedOK = movedOK && r.movedOK
	}
	if movedOK {
		ratio := medianOf(rounds, func(r windowResult) float64 { return r.bytesRatio() })
		moved := medianOf(rounds, func(r windowResult) int64 { return r.moved })
		unique := medianOf(rounds, func(r windowResult) int64 { return r.unique })
		fmt.Fprintf(tw, "bytes moved / unique bytes\t%.3f (%.2f / %.2f MiB)\t<= %.2f  %s\n", ratio, float64(moved)/mib,
			float64(unique)/mib, bytesGoalRatio, goalMark(ratio <= bytesGoalRatio))
	} else {
		fmt.Fprintf(tw, "bytes moved / unique bytes\tn/a (the child has no %s; unique %.2f MiB)\t<= %.2f  n/a\n", linkBytesMetric,
			float64(medianOf(rounds, func(r windowResult) int64 { return r.unique }))/mib, bytesGoalRatio)
	}
	fmt.Fprintf(tw, "  pushes at the root (untimed)\t%.1f s\t\n", medianOf(rounds, func(r windowResult) time.Duration { return r.pushes }).Seconds())
	fmt.Fprintf(tw, "  messages waiting at the root as the window opened\t%.0f\t\n",
		medianOf(rounds, func(r windowResult) float64 { return float64(r.waiting) }))
	drained := "not seen"
	if d := medianOf(rounds, func(r windowResult) time.Duration { return r.drained }); d > 0 {
		drained = fmt.Sprintf("%.1f s", d.Seconds())
	}
	fmt.Fprintf(tw, "  window open -> root reports nothing waiting\t%s\t(reports every 2 s)\n", drained)
	tw.Flush()
	fmt.Fprintln(out)

	fmt.Fprintf(out, "(2) a %d MiB one-layer image pushed at the root; a fresh child (ReadOnly, bigwin/*, window always open)\n"+
		"    from push completion until it resolves the tag (HEAD every %s); its peak RSS (VmHWM) then\n", cfg.largeMiB, headPoll)
	tw = newTable(out)
	fmt.Fprintln(tw, "measure\tvalue\tgoal")
	large := medianOf(rounds, func(r windowResult) time.Duration { return r.large })
	fmt.Fprintf(tw, "copy root -> child\t%.3f s\t%.1f MiB/s\n", large.Seconds(), medianOf(rounds, windowResult.largeMiBs))
	peak := medianOf(rounds, func(r windowResult) int64 { return r.peakRSS })
	fmt.Fprintf(tw, "child peak RSS\t%.1f MiB\t<= %d MiB  %s\n", float64(peak)/mib, peakRSSGoal/mib, goalMark(peak <= peakRSSGoal))
	fmt.Fprintf(tw, "  of which before the copy\t%.1f MiB\t\n", float64(medianOf(rounds, func(r windowResult) int64 { return r.startRSS }))/mib)
	tw.Flush()
}
