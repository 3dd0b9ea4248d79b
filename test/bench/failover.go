package main

// The failover suite measures the gap a root tier leaves when a member dies: three
// root members (separate `outpost serve` processes, one JetStream cluster, one
// SeaweedFS bucket) and a ReadWrite site whose connection string names every
// member. While a client pushes small images at a survivor, one after another, the
// member the site's gateway connection is on (the site's log says which) gets
// SIGKILL. Measured from the kill: the first push begun after it that a survivor
// acknowledges, and the first of those pushes to reach the site. The member is then
// restarted on its data and the next round kills whichever member the site is on
// then. The tier is started once; each round is one kill.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/registry/s3test"
)

// failoverGoal is issue 11's bound on both gaps.
const failoverGoal = 10 * time.Second

type failoverConfig struct {
	common
	clusterFlags
	weed string
}

func parseFailoverFlags(args []string) (failoverConfig, error) {
	var cfg failoverConfig
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	cfg.common.register(fs, 5)
	cfg.clusterFlags.register(fs, 60*time.Second)
	fs.StringVar(&cfg.weed, "weed", defaultTool("weed"), "SeaweedFS binary (`make tools` builds it into ./bin)")
	quick := fs.Bool("quick", false, "smoke run: --rounds 1, unless given")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if *quick {
		quickDefaults(fs, map[string]quickDefault{"rounds": {&cfg.rounds, 1}})
	}
	return cfg, cfg.validate()
}

// failoverResult is one kill.
type failoverResult struct {
	victim string
	// ack is from the kill to the first acknowledged push begun after it, at a
	// survivor; copy, to the first of those pushes at the site.
	ack, copy time.Duration
	// failed is how many pushes at the survivor failed in the round.
	failed int
}

func runFailoverSuite(ctx context.Context, args []string) error {
	cfg, err := parseFailoverFlags(args)
	if err != nil {
		return err
	}
	if cfg.weed, err = lookTool("weed", cfg.weed); err != nil {
		return err
	}
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	s3, err := s3test.Run(cfg.weed)
	if err != nil {
		return fmt.Errorf("SeaweedFS: %w", err)
	}
	defer s3.Close()
	tr, err := startFailoverTier(ctx, cfg, work, s3)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tr.stop()) }()

	var results []failoverResult
	g := generator{seed: uint64(time.Now().UnixNano())}
	for kill := 1; kill <= cfg.rounds; kill++ {
		g.round = kill
		r, err := tr.killOne(ctx, g, kill)
		if err != nil {
			return fmt.Errorf("kill %d: %w", kill, err)
		}
		fmt.Printf("kill %d of %s: first push acknowledged by a survivor %.2f s after the kill, its copy at the site %.2f s after (%d pushes failed)\n",
			kill, r.victim, r.ack.Seconds(), r.copy.Seconds(), r.failed)
		results = append(results, r)
	}
	printFailoverTable(os.Stdout, cfg, results)
	return nil
}

// failoverTier is the members, the site, and a client for each.
type failoverTier struct {
	*cluster
	cfg     failoverConfig
	tier    *tierMembers
	clients []*client
	site    *server
	siteC   *client
	siteLog string
}

func startFailoverTier(ctx context.Context, cfg failoverConfig, work string, s3 *s3test.Server) (_ *failoverTier, err error) {
	cl := &cluster{common: cfg.common, clusterFlags: cfg.clusterFlags, dir: work, token: newAdminToken()}
	tr := &failoverTier{cluster: cl, cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, tr.stop())
		}
	}()
	if tr.tier, err = startTierMembers(ctx, cfg.common, cfg.clusterFlags, cl.token, work, s3, "failover", 3, nil); err != nil {
		return nil, err
	}
	for _, m := range tr.tier.servers {
		c, err := newClient(ctx, m, cfg.jobs)
		if err != nil {
			return nil, err
		}
		tr.clients = append(tr.clients, c)
	}
	cl.root = tr.tier.servers[0]
	o, err := cl.define(ctx, childSpec{name: "siteone", mode: "ReadWrite", repos: []string{"bench/*"}})
	if err != nil {
		return nil, err
	}
	siteDir := filepath.Join(work, "site")
	if err := os.MkdirAll(siteDir, 0o700); err != nil {
		return nil, err
	}
	// The site's log says which member its gateway connection is on.
	o.name, o.log = "siteone", filepath.Join(siteDir, "output.log")
	tr.siteLog = o.log
	if tr.site, err = startOutpost(ctx, cfg.outpost, siteDir, o); err != nil {
		return nil, err
	}
	if tr.siteC, err = newClient(ctx, tr.site, cfg.jobs); err != nil {
		return nil, err
	}
	return tr, nil
}

func (tr *failoverTier) stop() error {
	var errs []error
	if tr.siteC != nil {
		tr.siteC.close()
	}
	if tr.site != nil {
		errs = append(errs, tr.site.stop())
	}
	for _, c := range tr.clients {
		c.close()
	}
	if tr.tier != nil {
		errs = append(errs, tr.tier.stop())
	}
	return errors.Join(errs...)
}

// siteMember is the member the site's gateway connection is on now, from the
// site's last "parent gateway connected/reconnected" log line; -1 if none.
func (tr *failoverTier) siteMember() (int, error) {
	f, err := os.Open(tr.siteLog)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	endpoint := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct{ Msg, Endpoint string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && (rec.Msg == "parent gateway connected" || rec.Msg == "parent gateway reconnected") {
			endpoint = rec.Endpoint
		}
	}
	return slices.Index(tr.tier.gateways, endpoint), sc.Err()
}

// killOne makes sure the tier syncs to the site, kills the site's member during
// pushes at a survivor, measures, and restarts the member.
func (tr *failoverTier) killOne(ctx context.Context, g generator, kill int) (failoverResult, error) {
	imgs, err := g.small("failover", 200)
	if err != nil {
		return failoverResult{}, err
	}
	repo := fmt.Sprintf("bench/kill%d", kill)
	// The tier replicates to the site before the kill (after a restart too).
	if err := tr.clients[0].push(ctx, tr.clients[0].ref(repo, "warm"), imgs[0].img); err != nil {
		return failoverResult{}, err
	}
	warm := imgs[0]
	warm.tag = "warm"
	if err := tr.waitResolves(ctx, tr.siteC, tr.site, repo, warm); err != nil {
		return failoverResult{}, err
	}
	victim, err := tr.siteMember()
	if err != nil || victim < 0 {
		return failoverResult{}, fmt.Errorf("which member the site is on: %v (its log names no member's gateway)", err)
	}
	survivor := (victim + 1) % len(tr.tier.servers)
	c := tr.clients[survivor]

	type push struct {
		tag           string
		digest        string
		began, acked  time.Time
		acknowledged  bool
		reachedSiteAt time.Time
	}
	var (
		mu     sync.Mutex
		pushes []*push
		failed int
	)
	pctx, stopPushes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, im := range imgs[1:] {
			if pctx.Err() != nil {
				return
			}
			p := &push{tag: im.tag, digest: im.digest.String(), began: time.Now()}
			ictx, cancel := context.WithTimeout(pctx, 45*time.Second)
			err := c.push(ictx, c.ref(repo, im.tag), im.img)
			cancel()
			mu.Lock()
			if err == nil {
				p.acked, p.acknowledged = time.Now(), true
				pushes = append(pushes, p)
			} else if pctx.Err() == nil {
				failed++
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	defer func() { stopPushes(); wg.Wait() }()
	// Pushes go on for a moment before the kill.
	time.Sleep(time.Second)
	m := tr.tier.servers[victim]
	if err := m.cmd.Process.Kill(); err != nil {
		return failoverResult{}, fmt.Errorf("SIGKILL %s: %w", m.name, err)
	}
	killed := time.Now()
	<-m.exited

	res := failoverResult{victim: m.name}
	err = poll(ctx, headPoll, tr.timeout, func(ctx context.Context) (bool, string, error) {
		mu.Lock()
		var after []*push
		for _, p := range pushes {
			if p.began.After(killed) {
				after = append(after, p)
			}
		}
		mu.Unlock()
		if len(after) == 0 {
			return false, "no push begun after the kill acknowledged", nil
		}
		res.ack = after[0].acked.Sub(killed)
		for _, p := range after {
			if _, ok, err := tr.siteC.resolve(ctx, repo, p.tag); err == nil && ok {
				res.copy = time.Since(killed)
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d pushes begun after the kill acknowledged, none at the site", len(after)), nil
	})
	stopPushes()
	wg.Wait()
	res.failed = failed
	if err != nil {
		return res, fmt.Errorf("after killing %s: %w%s", m.name, err, tr.site.lastOutput())
	}

	// Restart the member on its data, as a supervisor would.
	if err := tr.tier.restart(ctx, tr.cfg.common, victim); err != nil {
		return res, err
	}
	tr.clients[victim].close()
	if tr.clients[victim], err = newClient(ctx, tr.tier.servers[victim], tr.cfg.jobs); err != nil {
		return res, err
	}
	return res, nil
}

func printFailoverTable(out io.Writer, cfg failoverConfig, rs []failoverResult) {
	fmt.Fprintln(out, "\nroot tier failover: 3 members (separate processes, one JetStream cluster, SeaweedFS on this machine), one ReadWrite site;")
	fmt.Fprintln(out, "SIGKILL of the member the site's gateway connection is on, during pushes at a survivor; the member restarted after each kill")
	fmt.Fprintf(out, "medians of %d kill(s); %s/%s, %d CPUs\n\n", len(rs), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	ack := medianOf(rs, func(r failoverResult) time.Duration { return r.ack })
	cp := medianOf(rs, func(r failoverResult) time.Duration { return r.copy })
	tw := newTable(out)
	fmt.Fprintln(tw, "from the SIGKILL to\tmedian s\tmax s\tgoal s\t")
	fmt.Fprintf(tw, "first push acknowledged by a survivor\t%.2f\t%.2f\t%.0f\t%s\n", ack.Seconds(),
		slices.Max(durations(rs, func(r failoverResult) time.Duration { return r.ack })).Seconds(), failoverGoal.Seconds(), goalMark(ack <= failoverGoal))
	fmt.Fprintf(tw, "first copy of such a push at the site\t%.2f\t%.2f\t%.0f\t%s\n", cp.Seconds(),
		slices.Max(durations(rs, func(r failoverResult) time.Duration { return r.copy })).Seconds(), failoverGoal.Seconds(), goalMark(cp <= failoverGoal))
	tw.Flush()
}

func durations(rs []failoverResult, f func(failoverResult) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}
