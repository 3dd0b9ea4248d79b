package main

// The fanout suite: one root with many connected children, simulated in this
// process by a load generator that speaks the real gateway protocol. Each simulated
// child is created at the root through the management API, gets its connection
// string, dials the root's gateway with its sync token as one process instance,
// activates, logs in again as the active instance (as a real node does), then does
// what a real site's syncer and downstream link do: a config fetch and a status
// report every sync interval, and a pull of its DOWN_<child> outbox. On an event it
// HEADs and GETs the manifest from the root's registry with its sync token (registry
// token flow, Outpost-Instance header) and acks.
//
// One push at the root, then: per child, the time from the push's ack to the
// manifest pulled (p50, p95), the root's CPU seconds over that time and while idle
// with every child syncing, and the root's peak RSS.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/hierarchy"
	"github.com/outpost-edge/outpost/registry/s3test"
)

const (
	fanoutRepo = "bench/fanout"
	// fanoutP50Goal is issue 11's goal at 1,000 children.
	fanoutP50Goal = time.Second
	// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on
	// every Linux this runs on).
	clockTicks = 100
)

type fanoutConfig struct {
	common
	clusterFlags
	children int
	members  int
	weed     string
	parallel int
	interval time.Duration
	idle     time.Duration
	profile  string
}

func parseFanoutFlags(args []string) (fanoutConfig, error) {
	var cfg fanoutConfig
	fs := flag.NewFlagSet("bench fanout", flag.ContinueOnError)
	cfg.common.register(fs, 3)
	cfg.clusterFlags.register(fs, 2*time.Minute)
	fs.IntVar(&cfg.children, "children", 1000, "simulated children connected to the root")
	fs.IntVar(&cfg.members, "members", 1, "root members: 1 (filesystem storage), or 3 (one JetStream cluster, SeaweedFS)")
	fs.StringVar(&cfg.weed, "weed", defaultTool("weed"), "SeaweedFS binary, for --members 3 (`make tools` builds it into ./bin)")
	fs.IntVar(&cfg.parallel, "parallel", 16, "children created, activated and connected at once during set-up")
	fs.DurationVar(&cfg.interval, "sync-interval", 2*time.Second, "each child's config fetch and status report interval (a real node's is 2 s)")
	fs.DurationVar(&cfg.idle, "idle", 10*time.Second, "how long the root's CPU is measured with every child syncing and no push")
	fs.StringVar(&cfg.profile, "profile", "", "write the root's CPU profiles (idle, and round 1) and heap profile into this directory")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if cfg.members != 1 && cfg.members != 3 {
		return cfg, usageError{fmt.Errorf("--members %d: 1 or 3 (a JetStream cluster of 2 has no quorum after a loss)", cfg.members)}
	}
	if cfg.children < 1 || cfg.parallel < 1 {
		return cfg, usageError{errors.New("--children and --parallel must be at least 1")}
	}
	return cfg, cfg.common.validate()
}

func runFanoutSuite(ctx context.Context, args []string) error {
	cfg, err := parseFanoutFlags(args)
	if err != nil {
		return err
	}
	work, done, err := cfg.setUp(ctx)
	if err != nil {
		return err
	}
	defer done()
	tier, err := startRootTier(ctx, cfg, work)
	if err != nil {
		return err
	}
	defer func() { _ = tier.stop() }()
	root := tier.root
	t0 := time.Now()
	sim, err := startChildren(ctx, cfg, root, tier.token)
	if err != nil {
		return err
	}
	defer sim.stop()
	slog.Info("children connected", "children", cfg.children, "setup", time.Since(t0).Round(time.Millisecond))

	// Each child's first status report opens its outbox at the root: once, not idle load.
	settle := time.NewTimer(2 * cfg.interval)
	select {
	case <-settle.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	before, err := tier.cpuSeconds()
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.idle)
	tier.profile(pctx, fmt.Sprintf("profile?seconds=%d", max(1, int(cfg.idle.Seconds())-1)), "idle.pprof")
	<-pctx.Done()
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	after, err := tier.cpuSeconds()
	if err != nil {
		return err
	}
	idleCPU := (after - before) / cfg.idle.Seconds()

	var rounds []fanoutResult
	for r := 1; r <= cfg.rounds; r++ {
		if r == 1 {
			profiled := make(chan struct{})
			go func() { defer close(profiled); tier.profile(ctx, "profile?seconds=15", "round1.pprof") }()
			defer func() { <-profiled }()
		}
		res, err := fanoutRound(ctx, cfg, tier, sim, generator{seed: uint64(time.Now().UnixNano()), round: r})
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		fmt.Printf("round %d: children %d  p50 %s  p95 %s  max %s  root CPU %.2f s\n",
			r, cfg.children, res.p50.Round(time.Millisecond), res.p95.Round(time.Millisecond), res.max.Round(time.Millisecond), res.cpu)
		rounds = append(rounds, res)
	}
	tier.profile(ctx, "heap", "heap.pprof")
	rss, rssSum, err := tier.peakRSS()
	if err != nil {
		return err
	}
	printFanoutTable(os.Stdout, cfg, rounds, idleCPU, rss, rssSum, sim)
	return nil
}

// rootTier is the root's members; the first takes the push and the admin calls.
// Children connect to members at random (a connection string names them all) and
// each pulls from one member, in turn.
type rootTier struct {
	*cluster
	members               []*server
	s3                    *s3test.Server // SeaweedFS, for members > 1
	pprofAddr, profileDir string
}

// startRootTier starts the root: one member on filesystem storage, or a tier of
// members over one JetStream cluster and a SeaweedFS bucket. Only the first member
// is profiled.
func startRootTier(ctx context.Context, cfg fanoutConfig, dir string) (_ *rootTier, err error) {
	cl := &cluster{common: cfg.common, clusterFlags: cfg.clusterFlags, dir: dir, token: newAdminToken()}
	t := &rootTier{cluster: cl, profileDir: cfg.profile}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.stop())
		}
	}()
	var profileArgs []string
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o700); err != nil {
			return nil, fmt.Errorf("--profile: %w", err)
		}
		if t.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		profileArgs = []string{"--pprof-addr", t.pprofAddr}
	}
	if cfg.members == 1 {
		root, err := cl.start(ctx, "root", rootOptions(cl.token, append([]string{"--name", "root", "--log-level", cfg.logLevel}, profileArgs...)...))
		if err != nil {
			return nil, err
		}
		t.members = []*server{root}
	} else {
		weed, err := lookTool("weed", cfg.weed)
		if err != nil {
			return nil, err
		}
		if t.s3, err = s3test.Run(weed); err != nil {
			return nil, fmt.Errorf("SeaweedFS: %w", err)
		}
		tm, err := startTierMembers(ctx, cfg.common, cfg.clusterFlags, cl.token, dir, t.s3, "fanout", cfg.members, func(i int) []string {
			if i == 0 {
				return profileArgs
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		t.members = tm.servers
		cl.started = append(cl.started, tm.servers...) // stopped with the cluster
	}
	cl.root = t.members[0]
	if cl.rootC, err = cl.client(ctx, cl.root); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *rootTier) stop() error {
	err := t.cluster.stop()
	if t.s3 != nil {
		t.s3.Close()
	}
	return err
}

// cpuSeconds is the CPU time all members have used so far.
func (t *rootTier) cpuSeconds() (float64, error) {
	var sum float64
	for _, m := range t.members {
		s, err := cpuSeconds(m.process)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// peakRSS is the members' peak resident sizes: the largest, and their sum.
func (t *rootTier) peakRSS() (largest, sum int64, err error) {
	for _, m := range t.members {
		r, err := m.peakRSS()
		if err != nil {
			return 0, 0, err
		}
		largest, sum = max(largest, r), sum+r
	}
	return largest, sum, nil
}

// profile saves the root's profile kind (?seconds=N for a CPU profile) as file in
// --profile's directory; nothing without --profile.
func (t *rootTier) profile(ctx context.Context, kind, file string) {
	if t.pprofAddr == "" {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.pprofAddr+"/debug/pprof/"+kind, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		slog.Warn("profile", "kind", kind, "err", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(t.profileDir, file), b, 0o600)
	}
	if err != nil {
		slog.Warn("profile", "kind", kind, "err", err)
	}
}

type fanoutResult struct {
	latencies     []time.Duration
	p50, p95, max time.Duration
	cpu           float64 // root CPU seconds from the push to the last child done
	window        time.Duration
}

// fanoutRound pushes one image to the root and waits until every child pulled its
// manifest.
func fanoutRound(ctx context.Context, cfg fanoutConfig, tier *rootTier, sim *children, g generator) (fanoutResult, error) {
	imgs, err := g.small("fanout", 1)
	if err != nil {
		return fanoutResult{}, err
	}
	im := imgs[0]
	tag := fmt.Sprintf("r%d-%d", g.round, time.Now().UnixNano())
	done := sim.expect(tag)
	cpu0, err := tier.cpuSeconds()
	if err != nil {
		return fanoutResult{}, err
	}
	if err := tier.rootC.push(ctx, tier.rootC.ref(fanoutRepo, tag), im.img); err != nil {
		return fanoutResult{}, err
	}
	acked := time.Now()
	timeout := time.NewTimer(cfg.timeout)
	defer timeout.Stop()
	var lat []time.Duration
	for len(lat) < cfg.children {
		select {
		case at := <-done:
			lat = append(lat, max(0, at.Sub(acked)))
		case <-timeout.C:
			return fanoutResult{}, fmt.Errorf("%d of %d children pulled %s within %s%s", len(lat), cfg.children, tag, cfg.timeout, sim.lastError())
		case <-ctx.Done():
			return fanoutResult{}, ctx.Err()
		}
	}
	cpu1, err := tier.cpuSeconds()
	if err != nil {
		return fanoutResult{}, err
	}
	return fanoutResult{latencies: lat, p50: percentile(lat, 50), p95: percentile(lat, 95), max: percentile(lat, 100),
		cpu: cpu1 - cpu0, window: time.Since(acked)}, nil
}

func printFanoutTable(out io.Writer, cfg fanoutConfig, rounds []fanoutResult, idleCPU float64, rss, rssSum int64, sim *children) {
	p50 := medianOf(rounds, func(r fanoutResult) time.Duration { return r.p50 })
	p95 := medianOf(rounds, func(r fanoutResult) time.Duration { return r.p95 })
	mx := medianOf(rounds, func(r fanoutResult) time.Duration { return r.max })
	cpu := medianOf(rounds, func(r fanoutResult) float64 { return r.cpu })
	// The children's syncs go on during the fan-out: what the push added is above them.
	extra := medianOf(rounds, func(r fanoutResult) float64 { return max(0, r.cpu-idleCPU*r.window.Seconds()) })
	fmt.Fprintf(out, "\nfan-out: one push at a root of %d member(s) to %d children (medians of %d rounds)\n", cfg.members, cfg.children, len(rounds))
	w := newTable(out)
	fmt.Fprintln(w, "measure\tvalue\tgoal")
	fmt.Fprintf(w, "push ack -> manifest pulled, p50\t%s\t<= %s %s\n", p50.Round(time.Millisecond), fanoutP50Goal, goalMark(p50 <= fanoutP50Goal))
	fmt.Fprintf(w, "push ack -> manifest pulled, p95\t%s\t(p95/p50 %.2f)\n", p95.Round(time.Millisecond), float64(p95)/float64(max(p50, time.Millisecond)))
	fmt.Fprintf(w, "push ack -> last child\t%s\t\n", mx.Round(time.Millisecond))
	fmt.Fprintf(w, "root CPU (all members), push to last child\t%.2f s\t(%.2f s above the idle rate)\n", cpu, extra)
	fmt.Fprintf(w, "root CPU (all members), idle with %d children syncing every %s\t%.3f s/s\t\n", cfg.children, cfg.interval, idleCPU)
	if cfg.members == 1 {
		fmt.Fprintf(w, "root peak RSS (VmHWM)\t%.0f MiB\t\n", float64(rss)/mib)
	} else {
		fmt.Fprintf(w, "root peak RSS (VmHWM), largest member\t%.0f MiB\t(%.0f MiB in all)\n", float64(rss)/mib, float64(rssSum)/mib)
	}
	fmt.Fprintf(w, "children's sync rounds (config + status), errors\t%d, %d\t\n", sim.syncs.Load(), sim.syncErrors.Load())
	_ = w.Flush()
	if last := sim.lastError(); last != "" {
		fmt.Fprintln(out, strings.TrimSpace(last))
	}
}

// cpuSeconds is the process's user and system CPU time so far (utime + stime in
// /proc/<pid>/stat).
func cpuSeconds(p *process) (float64, error) {
	path := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%s: CPU time: %w", p.name, err)
	}
	// The command name in parentheses may hold spaces: fields count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: %s: no command name", p.name, path)
	}
	f := strings.Fields(s[i+1:])
	// After the name: state(3) ... utime is field 14, stime 15 (1-based, name is 2).
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %s: too few fields", p.name, path)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %s: %w", p.name, path, err)
	}
	return float64(ut+st) / clockTicks, nil
}

// children are the simulated children and where each reports a tag pulled.
type children struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	all    []*simChild
	tr     *http.Transport

	mu      sync.Mutex
	tag     string
	done    chan time.Time
	lastErr error

	syncs, syncErrors atomic.Int64
}

type simChild struct {
	name     string
	instance string
	cs       hierarchy.ConnectionString
	registry string // the parent registry endpoint it pulls from
	nc       *nats.Conn
	uplink   *hierarchy.Uplink
	puller   *remote.Puller
}

// expect makes the children report when they pulled tag, on the returned channel.
func (c *children) expect(tag string) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tag, c.done = tag, make(chan time.Time, len(c.all))
	return c.done
}

func (c *children) pulled(tag string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag == c.tag {
		c.done <- at
	}
}

func (c *children) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}

func (c *children) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil {
		return ""
	}
	return fmt.Sprintf(" (a child's last error: %v)", c.lastErr)
}

func (c *children) stop() {
	c.cancel()
	c.wg.Wait()
	for _, ch := range c.all {
		if ch != nil && ch.nc != nil {
			ch.nc.Close()
		}
	}
	c.tr.CloseIdleConnections()
}

// startChildren creates, activates and connects cfg.children children, cfg.parallel
// at once, then starts each one's sync and drain loops.
func startChildren(ctx context.Context, cfg fanoutConfig, root *server, token string) (*children, error) {
	rctx, cancel := context.WithCancel(context.Background())
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.children + 16
	c := &children{cancel: cancel, tr: tr}
	api := &adminAPI{base: "http://" + root.addr, token: token}
	c.all = make([]*simChild, cfg.children)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.parallel)
	var ready atomic.Int64
	for i := range cfg.children {
		g.Go(func() error {
			ch, err := setUpChild(gctx, api, fmt.Sprintf("fan%04d", i), i, tr)
			if err != nil {
				return err
			}
			c.all[i] = ch
			if n := ready.Add(1); n%100 == 0 {
				slog.Info("children ready", "n", n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		c.stop()
		return nil, fmt.Errorf("set up children: %w", err)
	}
	for i, ch := range c.all {
		// Spread the sync rounds over the interval, as independent processes do.
		offset := time.Duration(i) * cfg.interval / time.Duration(len(c.all))
		c.wg.Add(2)
		go func() { defer c.wg.Done(); c.syncLoop(rctx, ch, cfg.interval, offset) }()
		go func() { defer c.wg.Done(); c.drainLoop(rctx, ch) }()
	}
	return c, nil
}

// setUpChild defines one child at the root, takes its connection string and
// activates it as a new process instance, then logs in again as the active one.
func setUpChild(ctx context.Context, api *adminAPI, nodeName string, i int, tr http.RoundTripper) (*simChild, error) {
	req := hierarchy.CreateRequest{Name: nodeName, Settings: hierarchy.Settings{
		Mode: hierarchy.ReadOnly, Repositories: hierarchy.Scope{hierarchy.Pattern(fanoutRepo)}}}
	if err := api.call(ctx, http.MethodPost, "/outpost/v1/nodes", req, nil); err != nil {
		return nil, err
	}
	var settings struct {
		ConnectionString string `json:"connectionString"`
	}
	if err := api.call(ctx, http.MethodPost, "/outpost/v1/nodes/"+nodeName+"/settings", nil, &settings); err != nil {
		return nil, err
	}
	cs, err := hierarchy.ParseConnectionString(settings.ConnectionString)
	if err != nil {
		return nil, err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	// A tier's connection string names every member: child i pulls from member
	// i mod n (a real node fails over in turn, from the first).
	eps := cs.RegistryEndpoints()
	if len(eps) == 0 {
		return nil, fmt.Errorf("%s: connection string names no parent registry", nodeName)
	}
	ch := &simChild{name: nodeName, instance: hex.EncodeToString(b[:]), cs: cs, registry: eps[i%len(eps)]}
	if ch.nc, err = events.DialParent(cs.ParentGateway, cs.SyncTokenName, cs.SyncTokenPassword, nodeName, ch.instance,
		nats.ReconnectBufSize(-1)); err != nil {
		return nil, err
	}
	ch.uplink = hierarchy.NewUplink(ch.nc, nodeName, ch.instance)
	// Several activations at once race on the root's compare-and-set: a real process
	// retries with a backoff, so does this.
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = ch.uplink.Activate(actx, nodeName, ch.instance, hierarchy.Endpoints{Registry: "127.0.0.1:1", Gateway: "127.0.0.1:1", Protocol: "http"})
		cancel()
		if err == nil || attempt == 20 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(50+attempt*50) * time.Millisecond)
	}
	if err != nil {
		ch.nc.Close()
		return nil, fmt.Errorf("%s: activate: %w", nodeName, err)
	}
	// Logged in before it was active, for control requests only: log in again.
	if err := ch.nc.ForceReconnect(); err != nil {
		ch.nc.Close()
		return nil, fmt.Errorf("%s: reconnect: %w", nodeName, err)
	}
	for !ch.nc.IsConnected() {
		if ctx.Err() != nil {
			ch.nc.Close()
			return nil, ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: cs.SyncTokenName, Password: cs.SyncTokenPassword})
	if ch.puller, err = remote.NewPuller(remote.WithContext(ctx), remote.WithAuth(auth),
		remote.WithTransport(instanceTransport{base: tr, instance: ch.instance})); err != nil {
		ch.nc.Close()
		return nil, err
	}
	// A new node reconciles its scope with its parent once activated: its first
	// registry token (a sync token check at the root) comes then, not with the push.
	// The root's registry sees an activation within a second (its access snapshot).
	reg, err := name.NewRegistry(ch.registry, name.Insecure)
	for deadline := time.Now().Add(5 * time.Second); err == nil; {
		_, err = ch.puller.Head(ctx, reg.Repo(fanoutRepo).Tag("warm-up"))
		var terr *transport.Error
		if err == nil || errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			err = nil
			break
		}
		if time.Now().After(deadline) {
			break
		}
		err = nil
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		ch.nc.Close()
		return nil, fmt.Errorf("%s: first registry request: %w", nodeName, err)
	}
	return ch, nil
}

// syncLoop is a real node's syncer toward its parent: its config, then its status.
func (c *children) syncLoop(ctx context.Context, ch *simChild, interval, offset time.Duration) {
	select {
	case <-time.After(offset):
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, err := ch.uplink.Config(sctx)
		if err == nil {
			err = ch.uplink.Report(sctx, []hierarchy.Status{{Node: ch.name, State: hierarchy.Online,
				LastSync: time.Now().UTC(), Reported: time.Now().UTC(), WindowOpen: true}})
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.syncs.Add(1)
		if err != nil {
			c.syncErrors.Add(1)
			c.fail(fmt.Errorf("%s: sync: %w", ch.name, err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// drainLoop is a real node's downstream link: take what waits in its outbox (or
// wait a second for one message), copy the manifest from the parent, ack.
func (c *children) drainLoop(ctx context.Context, ch *simChild) {
	var q *events.Queue
	for ctx.Err() == nil {
		var err error
		if q, err = events.OpenQueue(ctx, ch.nc, events.DownstreamOutbox(ch.name)); err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) { // until its first status report opens it
			c.fail(fmt.Errorf("%s: open outbox: %w", ch.name, err))
		}
		time.Sleep(time.Second)
	}
	reg, _ := name.NewRegistry(ch.registry, name.Insecure)
	for ctx.Err() == nil {
		ds, err := q.NextBatch(ctx, events.MaxBatch, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("%s: fetch: %w", ch.name, err))
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		for _, d := range ds {
			if err := c.apply(ctx, ch, reg, d.Event); err != nil {
				c.fail(fmt.Errorf("%s: %s %s:%s: %w", ch.name, d.Event.Action, d.Event.Repository, d.Event.Tag, err))
				_ = d.Retry(time.Second)
				continue
			}
			_ = d.AckAsync()
			c.pulled(d.Event.Tag, time.Now())
		}
	}
}

// apply does what the copier does first for a tag event: HEAD the manifest at the
// parent, then GET it (a real node then copies what it lacks).
func (c *children) apply(ctx context.Context, ch *simChild, reg name.Registry, e *events.Event) error {
	if e.Tag == "" {
		return nil
	}
	ref := reg.Repo(e.Repository).Tag(e.Tag)
	if _, err := ch.puller.Head(ctx, ref); err != nil {
		return err
	}
	_, err := ch.puller.Get(ctx, ref)
	return err
}

// instanceTransport names the process instance on every request to the parent's
// registry, as a node's link does.
type instanceTransport struct {
	base     http.RoundTripper
	instance string
}

func (t instanceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(events.HeaderInstance, t.instance)
	return t.base.RoundTrip(r)
}

// adminAPI calls the root's management API with the admin token.
type adminAPI struct {
	base, token string
}

// call sends body as JSON and decodes the answer into out (if not nil). A 409 (a
// compare-and-set lost to another call at once) is tried again.
func (a *adminAPI) call(ctx context.Context, method, path string, body, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, a.base+path, strings.NewReader(string(data)))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusConflict && attempt < 20:
			time.Sleep(time.Duration(20+attempt*20) * time.Millisecond)
			continue
		case resp.StatusCode/100 != 2:
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		case out != nil:
			return json.Unmarshal(b, out)
		}
		return nil
	}
}
