package main

// The storage suite compares one Outpost root on S3 (a real SeaweedFS, bin/weed)
// with one on the filesystem, in the same run and with the same steps as the node
// suite: one large single-layer image, then many small images, pushed and pulled.
// Every round starts each root afresh (an empty data directory; on S3, a new
// bucket), the two taking turns going first. Blob reads are served by the node
// (redirects off, the default).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/outpost-edge/outpost/registry/s3test"
)

func parseStorageFlags(args []string) (nodeConfig, string, error) {
	var cfg nodeConfig
	fs := flag.NewFlagSet("bench s3", flag.ContinueOnError)
	cfg.register(fs, 3)
	cfg.small, cfg.largeMiB = 200, 256
	weed := fs.String("weed", defaultTool("weed"), "SeaweedFS binary (`make tools` builds it into ./bin)")
	fs.IntVar(&cfg.small, "small", cfg.small, "number of small images")
	fs.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "size of the large layer in MiB")
	quick := fs.Bool("quick", false, "smoke run: --rounds 1 --small 20 --large-mib 16, unless those are given")
	if err := parse(fs, args); err != nil {
		return cfg, "", err
	}
	if *quick {
		quickDefaults(fs, map[string]quickDefault{"rounds": {&cfg.rounds, 1}, "small": {&cfg.small, 20},
			"large-mib": {&cfg.largeMiB, 16}})
	}
	if cfg.small < 1 || cfg.largeMiB < 1 {
		return cfg, "", usageError{errors.New("--small and --large-mib must be at least 1")}
	}
	return cfg, *weed, cfg.validate()
}

func runStorageSuite(ctx context.Context, args []string) error {
	cfg, weed, err := parseStorageFlags(args)
	if err != nil {
		return err
	}
	if weed, err = lookTool("weed", weed); err != nil {
		return err
	}
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	s3, err := s3test.Run(weed)
	if err != nil {
		return fmt.Errorf("SeaweedFS: %w", err)
	}
	defer s3.Close()
	logFile := func(dir string) string {
		if !cfg.keep {
			return ""
		}
		return filepath.Join(dir, "output.log")
	}
	var buckets atomic.Int64
	targets := []target{
		{name: "filesystem", start: func(ctx context.Context, dir string) (*server, error) {
			o := rootOptions(newAdminToken())
			o.log = logFile(dir)
			return startOutpost(ctx, cfg.outpost, dir, o)
		}},
		{name: "s3", start: func(ctx context.Context, dir string) (*server, error) {
			bucket := fmt.Sprintf("bench%d", buckets.Add(1))
			if err := s3.CreateBucket(ctx, bucket); err != nil {
				return nil, err
			}
			o := rootOptions(newAdminToken(), "--storage", "s3", "--s3-bucket", bucket, "--s3-endpoint", s3.Endpoint, "--s3-path-style")
			o.env = append(o.env, "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey)
			o.log = logFile(dir)
			return startOutpost(ctx, cfg.outpost, dir, o)
		}},
	}
	steps := newSteps(cfg)
	res, err := measureTargets(ctx, cfg, work, targets, steps)
	if err != nil {
		return err
	}
	printStorageTable(os.Stdout, cfg, steps, res)
	return nil
}

func printStorageTable(out io.Writer, cfg nodeConfig, steps []step, res results) {
	fmt.Fprintln(out, "outpost on S3 (SeaweedFS on this machine, redirects off) against outpost on the filesystem; ratio = S3 speed / filesystem speed")
	fmt.Fprintf(out, "medians of %d round(s); %s/%s, %d CPUs, %d jobs; fresh data directory and bucket per root per round\n\n",
		cfg.rounds, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cfg.jobs)
	tw := newTable(out)
	fmt.Fprintln(tw, "step\tfilesystem s\ts3 s\tfilesystem\ts3\tratio")
	for i, s := range steps {
		fsd, s3d := res.median("filesystem", i), res.median("s3", i)
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.1f %s\t%.1f %s\t%.2f\n", s.name, fsd.Seconds(), s3d.Seconds(),
			speed(s, fsd), s.unit, speed(s, s3d), s.unit, fsd.Seconds()/s3d.Seconds())
	}
	tw.Flush()
}
