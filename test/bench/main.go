// Command bench measures Outpost on this machine. It has these suites:
//
//	go run ./test/bench node [flags]    # one node vs plain distribution: push and pull
//	go run ./test/bench tree [flags]    # replication in a tree of nodes vs crane and regsync
//	go run ./test/bench window [flags]  # replication after a sync window opens; peak RSS
//	go run ./test/bench s3 [flags]      # a root on S3 (SeaweedFS) vs one on the filesystem
//	go run ./test/bench failover        # a root tier: the gap a SIGKILLed member leaves
//	go run ./test/bench fanout [flags]  # one push at a root to many simulated children
//	go run ./test/bench node --quick    # smoke run
//
// Run a suite with -h for its flags. Without a suite name, bench runs node, which is
// what `make bench` runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	mib          = 1 << 20
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// A suite parses its own flags and runs in work, a temporary directory that is
// removed afterwards unless --keep is given.
type suite struct {
	name string
	doc  string
	run  func(ctx context.Context, args []string) error
}

var suites = []suite{
	{"node", "one Outpost node vs plain distribution: push and pull, large and small images", runNodeSuite},
	{"tree", "replication in a tree of Outpost nodes vs crane copy and regsync", runTreeSuite},
	{"window", "replication of moves buffered behind a sync window; a child's peak RSS", runWindowSuite},
	{"s3", "one root on S3 (SeaweedFS) vs one on the filesystem: push and pull, large and small images", runStorageSuite},
	{"failover", "a root tier of 3 members: the gap a SIGKILLed member leaves, to the next push and to a site", runFailoverSuite},
	{"fanout", "one push at a root to 1,000 simulated children speaking the gateway protocol: latency, root CPU and RSS", runFanoutSuite},
}

func main() {
	s, args, err := pickSuite(os.Args[1:])
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = s.run(ctx, args)
		stop()
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// pickSuite takes the suite name off args. A missing name, or a flag in its place,
// means node: the Makefile calls `bench --registry ...`.
func pickSuite(args []string) (suite, []string, error) {
	isHelp := func(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }
	switch {
	case len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelp(args[0]):
		return suites[0], args, nil
	case isHelp(args[0]):
		fmt.Fprint(os.Stderr, suitesUsage())
		return suite{}, nil, flag.ErrHelp
	}
	for _, s := range suites {
		if args[0] == s.name {
			return s, args[1:], nil
		}
	}
	return suite{}, nil, usageError{fmt.Errorf("unknown suite %q\n%s", args[0], suitesUsage())}
}

func suitesUsage() string {
	var b strings.Builder
	b.WriteString("usage: bench SUITE [flags]    (bench SUITE -h for its flags)\nsuites:\n")
	for _, s := range suites {
		fmt.Fprintf(&b, "  %-7s %s\n", s.name, s.doc)
	}
	return b.String()
}

// usageError is a bad command line: exit status 2, like the flag package.
type usageError struct{ error }

// common are the flags every suite has.
type common struct {
	rounds  int
	jobs    int
	outpost string
	keep    bool
}

func (c *common) register(fs *flag.FlagSet, rounds int) {
	c.rounds, c.jobs = rounds, 4
	fs.IntVar(&c.rounds, "rounds", c.rounds, "rounds; the tables show medians")
	fs.IntVar(&c.jobs, "jobs", c.jobs, "client concurrency (remote.WithJobs), the same for every registry and tool")
	fs.StringVar(&c.outpost, "outpost", "", "outpost binary (default: build ./cmd/outpost into a temp dir)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory, with every process's output, and print its path")
}

func (c *common) validate() error {
	if c.rounds < 1 || c.jobs < 1 {
		return usageError{errors.New("--rounds and --jobs must be at least 1")}
	}
	return nil
}

// parse parses args into fs; a flag error becomes a usageError.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// quickDefault is a flag's value under --quick.
type quickDefault struct {
	v     *int
	quick int
}

// quickDefaults applies the --quick values of the flags the command line did not give.
func quickDefaults(fs *flag.FlagSet, defaults map[string]quickDefault) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, d := range defaults {
		if !set[name] {
			*d.v = d.quick
		}
	}
}

// setUp makes the run's temporary work directory and, unless --outpost is given,
// builds outpost into it; done removes the directory, unless --keep.
func (c *common) setUp(ctx context.Context) (work string, done func(), err error) {
	work, err = os.MkdirTemp("", "outpost-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("work directory: %w", err)
	}
	done = func() { os.RemoveAll(work) }
	if c.keep {
		done = func() { slog.Info("kept the work directory", "dir", work) }
	}
	if c.outpost, err = outpostBinary(ctx, c.outpost, work); err != nil {
		done()
		return "", nil, err
	}
	return work, done, nil
}

// outpostBinary returns bin, or builds ./cmd/outpost into dir if bin is empty.
func outpostBinary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("outpost binary: %w", err)
		}
		return p, nil
	}
	bin = filepath.Join(dir, "outpost")
	slog.Info("building outpost", "out", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/outpost-edge/outpost/cmd/outpost")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build outpost: %w", err)
	}
	return bin, nil
}

// runRounds runs round 1 to c.rounds, each in work/roundN (removed afterwards
// unless --keep) with content of its own, and prints each round's result as it
// comes.
func runRounds[R any](ctx context.Context, c common, work string, round func(ctx context.Context, g generator, dir string) (R, error), print func(R)) ([]R, error) {
	seed := uint64(time.Now().UnixNano())
	var results []R
	for n := 1; n <= c.rounds; n++ {
		dir := filepath.Join(work, fmt.Sprintf("round%d", n))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("round directory: %w", err)
		}
		r, err := round(ctx, generator{seed: seed, round: n}, dir)
		if !c.keep {
			os.RemoveAll(dir)
		}
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", n, err)
		}
		results = append(results, r)
		print(r)
	}
	return results, nil
}

// defaultTool is where a peer tool is looked for: ./bin, where `make tools` puts the
// pinned versions, then ~/go/bin, then PATH (the bare name).
func defaultTool(name string) string {
	candidates := []string{filepath.Join("bin", name)}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", name))
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
			return p
		}
	}
	return name
}

// lookTool resolves a tool flag to an executable path.
func lookTool(flagName, bin string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	return p, nil
}
