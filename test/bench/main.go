// Command bench compares push and pull speed of Outpost with plain distribution on
// this machine, in the same run: one large single-layer image, then many small images.
//
//	go run ./test/bench                 # 5 rounds, 256 MiB, 200 small images
//	go run ./test/bench --quick         # smoke run
//
// Every round starts each registry afresh on an empty data directory, so each round
// pushes into empty storage; the registries take turns going first.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

const (
	goalRatio    = 0.95
	mib          = 1 << 20
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	largeRepo    = "bench/large"
	smallRepo    = "bench/small"
)

type config struct {
	rounds   int
	outpost  string
	registry string
	small    int
	largeMiB int
	jobs     int
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	home, _ := os.UserHomeDir()
	cfg := config{rounds: 5, small: 200, largeMiB: 256, jobs: 4,
		registry: filepath.Join(home, "go", "bin", "registry")}
	flag.IntVar(&cfg.rounds, "rounds", cfg.rounds, "rounds per registry; the table shows medians")
	flag.StringVar(&cfg.outpost, "outpost", "", "outpost binary (default: build ./cmd/outpost into a temp dir)")
	flag.StringVar(&cfg.registry, "registry", cfg.registry, "distribution registry binary")
	flag.IntVar(&cfg.small, "small", cfg.small, "number of small images")
	flag.IntVar(&cfg.largeMiB, "large-mib", cfg.largeMiB, "size of the large layer in MiB")
	flag.IntVar(&cfg.jobs, "jobs", cfg.jobs, "client concurrency (remote.WithJobs), the same for both registries")
	quick := flag.Bool("quick", false, "smoke run: --rounds 1 --small 20 --large-mib 16, unless those are given")
	flag.Parse()
	if flag.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			cfg.rounds = 1
		}
		if !set["small"] {
			cfg.small = 20
		}
		if !set["large-mib"] {
			cfg.largeMiB = 16
		}
	}
	if cfg.rounds < 1 || cfg.small < 1 || cfg.largeMiB < 1 || cfg.jobs < 1 {
		return cfg, errors.New("--rounds, --small, --large-mib and --jobs must be at least 1")
	}
	return cfg, nil
}

func run(ctx context.Context, cfg config) error {
	work, err := os.MkdirTemp("", "outpost-bench-")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	defer os.RemoveAll(work)

	if cfg.outpost == "" {
		if cfg.outpost, err = buildOutpost(ctx, work); err != nil {
			return err
		}
	}
	if cfg.registry, err = exec.LookPath(cfg.registry); err != nil {
		return fmt.Errorf("distribution registry: %w", err)
	}
	targets := []target{
		{name: "outpost", start: func(ctx context.Context, dir string) (*server, error) {
			return startOutpost(ctx, cfg.outpost, dir)
		}},
		{name: "distribution", start: func(ctx context.Context, dir string) (*server, error) {
			return startDistribution(ctx, cfg.registry, dir)
		}},
	}
	steps := newSteps(cfg)
	res := results{}
	seed := uint64(time.Now().UnixNano())
	for round := 1; round <= cfg.rounds; round++ {
		w, err := newWorkload(seed, round, cfg)
		if err != nil {
			return err
		}
		order := slices.Clone(targets)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, t := range order {
			dir := filepath.Join(work, fmt.Sprintf("round%d-%s", round, t.name))
			d, err := benchTarget(ctx, t, dir, steps, w, cfg.jobs)
			if err != nil {
				return fmt.Errorf("round %d: %s: %w", round, t.name, err)
			}
			res.add(t.name, d)
		}
		printRound(os.Stdout, round, order, steps, res)
	}
	printTable(os.Stdout, cfg, steps, res)
	return nil
}

func buildOutpost(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "outpost")
	slog.Info("building outpost", "out", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/outpost-edge/outpost/cmd/outpost")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build outpost: %w", err)
	}
	return bin, nil
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

func newSteps(cfg config) []step {
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
// and removes dir.
func benchTarget(ctx context.Context, t target, dir string, steps []step, w *workload, jobs int) (_ []time.Duration, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	srv, err := t.start(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()

	c, err := newClient(ctx, srv.addr, jobs)
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

type image struct {
	tag    string
	img    v1.Image
	digest v1.Hash
}

func newWorkload(seed uint64, round int, cfg config) (*workload, error) {
	slog.Info("generating content", "round", round, "large_mib", cfg.largeMiB, "small", cfg.small)
	w := &workload{round: round}
	layer, err := newPRNGLayer(prngSeed(seed, round, "large"), int64(cfg.largeMiB)*mib)
	if err != nil {
		return nil, err
	}
	if w.large, err = newImage(fmt.Sprintf("round%d", round), layer); err != nil {
		return nil, err
	}
	content := rand.NewChaCha8(prngSeed(seed, round, "small"))
	sizes := rand.New(rand.NewPCG(seed, uint64(round)))
	for i := range cfg.small {
		b := make([]byte, 1024+sizes.IntN(3*1024+1))
		_, _ = content.Read(b) // never fails
		img, err := newImage(fmt.Sprintf("img-%04d", i), static.NewLayer(b, types.OCIUncompressedLayer))
		if err != nil {
			return nil, err
		}
		w.small = append(w.small, img)
	}
	return w, nil
}

func prngSeed(seed uint64, round int, purpose string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	return sha256.Sum256(fmt.Appendf(b[:], "/%d/%s", round, purpose))
}

// newImage builds a single-layer OCI image and computes its digest now, so that no
// client-side hashing is timed.
func newImage(tag string, layer v1.Layer) (image, error) {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return image{}, fmt.Errorf("image %s: %w", tag, err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	digest, err := img.Digest()
	if err != nil {
		return image{}, fmt.Errorf("image %s: %w", tag, err)
	}
	return image{tag: tag, img: img, digest: digest}, nil
}

// prngLayer is an uncompressed layer of pseudo-random bytes. Its content is
// regenerated on every read, so even a large layer never sits in memory; its digest
// is computed up front by one pass, because a manifest needs it before the push.
type prngLayer struct {
	seed   [32]byte
	size   int64
	digest v1.Hash
}

var _ v1.Layer = (*prngLayer)(nil)

func newPRNGLayer(seed [32]byte, size int64) (*prngLayer, error) {
	l := &prngLayer{seed: seed, size: size}
	rc, _ := l.Compressed()
	defer rc.Close()
	digest, n, err := v1.SHA256(rc)
	if err != nil {
		return nil, fmt.Errorf("hash generated layer: %w", err)
	}
	if n != size {
		return nil, fmt.Errorf("hash generated layer: got %d of %d bytes", n, size)
	}
	l.digest = digest
	return l, nil
}

func (l *prngLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(rand.NewChaCha8(l.seed), l.size)), nil
}

func (l *prngLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *prngLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *prngLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *prngLayer) Size() (int64, error)                 { return l.size, nil }
func (l *prngLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// client talks to one registry. Both registries get the same options; the pusher and
// puller are reused so that the /v2/ ping happens once per repository, not per image.
type client struct {
	registry  name.Registry
	jobs      int
	transport *http.Transport
	opts      []remote.Option
	pusher    *remote.Pusher
	puller    *remote.Puller
}

func newClient(ctx context.Context, addr string, jobs int) (*client, error) {
	reg, err := name.NewRegistry(addr, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", addr, err)
	}
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithJobs(jobs)}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, fmt.Errorf("pusher: %w", err)
	}
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, fmt.Errorf("puller: %w", err)
	}
	return &client{registry: reg, jobs: jobs, transport: tr, opts: opts, pusher: pusher, puller: puller}, nil
}

func (c *client) options(extra ...remote.Option) []remote.Option {
	return append(slices.Clip(c.opts), extra...)
}

func (c *client) close() { c.transport.CloseIdleConnections() }

func (c *client) ref(repo, tag string) name.Tag { return c.registry.Repo(repo).Tag(tag) }

func (c *client) push(ctx context.Context, ref name.Tag, img v1.Image) error {
	if err := c.pusher.Push(ctx, ref, img); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

func (c *client) pushAll(ctx context.Context, repo string, imgs []image) error {
	todo := make(map[name.Reference]remote.Taggable, len(imgs))
	for _, im := range imgs {
		todo[c.ref(repo, im.tag)] = im.img
	}
	if err := remote.MultiWrite(todo, c.options(remote.WithContext(ctx), remote.Reuse(c.pusher))...); err != nil {
		return fmt.Errorf("push %d images to %s: %w", len(imgs), c.registry.Repo(repo), err)
	}
	return nil
}

// pull fetches the manifest and config and streams every layer to nowhere; the
// layer and config readers verify size and digest.
func (c *client) pull(ctx context.Context, ref name.Tag, want v1.Hash) error {
	img, err := remote.Image(ref, c.options(remote.WithContext(ctx), remote.Reuse(c.puller))...)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if got, err := img.Digest(); err != nil || got != want {
		return fmt.Errorf("pull %s: manifest digest %s, want %s (%v)", ref, got, want, err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("pull %s: config: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	for _, l := range layers {
		if err := drain(l); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	return nil
}

func drain(l v1.Layer) error {
	digest, err := l.Digest()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	_, err = io.Copy(io.Discard, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	return nil
}

// pullAll pulls the images, as many at once as the client's jobs: ggcr has no
// multi-image pull, and MultiWrite pushes that many at once too.
func (c *client) pullAll(ctx context.Context, repo string, imgs []image) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, im := range imgs {
		g.Go(func() error { return c.pull(ctx, c.ref(repo, im.tag), im.digest) })
	}
	return g.Wait()
}

// server is a registry process listening on addr.
type server struct {
	*process
	addr string
}

func startOutpost(ctx context.Context, bin, dir string) (*server, error) {
	addrc := make(chan string, 1)
	p, err := startProcess("outpost", bin, []string{"serve", "--data", filepath.Join(dir, "data"),
		"--addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--log-format", "json"},
		func(line string) {
			var rec struct {
				Msg  string `json:"msg"`
				HTTP string `json:"http"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				select {
				case addrc <- rec.HTTP:
				default:
				}
			}
		})
	if err != nil {
		return nil, err
	}
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	select {
	case addr := <-addrc:
		srv := &server{process: p, addr: addr}
		return srv, srv.waitReady(ctx)
	case <-p.exited:
		err = errors.New("exited before serving")
	case <-timeout.C:
		err = fmt.Errorf("no %q log line within %s", "serving", startTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(fmt.Errorf("start outpost: %w%s", err, p.exitReport()), p.stop())
}

// distributionConfig leaves out the access log: Outpost's embedded app has none, and
// the comparison is about serving, not logging.
const distributionConfig = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`

func startDistribution(ctx context.Context, bin, dir string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(distributionConfig, filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("distribution config: %w", err)
	}
	p, err := startProcess("distribution", bin, []string{"serve", cfgPath}, nil)
	if err != nil {
		return nil, err
	}
	srv := &server{process: p, addr: addr}
	return srv, srv.waitReady(ctx)
}

// freeAddr finds a free loopback port. distribution cannot report a port it chose
// itself, so there is a small window in which another process could take it.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls /v2/ until it answers 200. On failure it stops the process.
func (s *server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	url := "http://" + s.addr + "/v2/"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return errors.Join(fmt.Errorf("%s: %w", s.name, err), s.stop())
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-tick.C:
		case <-s.exited:
			return errors.Join(fmt.Errorf("start %s: exited%s", s.name, s.exitReport()), s.stop())
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("start %s: not ready: %w (last: %v)", s.name, ctx.Err(), last), s.stop())
		}
	}
}

// process is a child process whose combined output is scanned line by line; the
// last lines are kept to explain a failure.
type process struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // set before exited is closed

	mu   sync.Mutex
	tail []string
}

const tailLines = 20

func startProcess(name, bin string, args []string, onLine func(string)) (*process, error) {
	cmd := exec.Command(bin, args...)
	// The standalone registry exports OpenTelemetry traces to localhost:4318 on every
	// request unless told not to; the embedded app never does. Same work for both.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	slog.Info("started", "process", name, "pid", cmd.Process.Pid)
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	go p.scan(pr, onLine)
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) scan(r io.Reader, onLine func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > tailLines {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
		if onLine != nil {
			onLine(line)
		}
	}
	// Keep draining, or the child would block on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// exitReport says how the process ended and what it last wrote, if it has exited.
func (p *process) exitReport() string {
	select {
	case <-p.exited:
	default:
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("\n%s exited (%v); its last output:\n%s", p.name, p.waitErr, strings.Join(p.tail, "\n"))
}

// stop interrupts the process and waits for it, killing it if it does not exit in
// time. It is safe to call more than once.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	timeout := time.NewTimer(stopTimeout)
	defer timeout.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timeout.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within %s of an interrupt; killed", p.name, stopTimeout)
	}
}

// results holds, per registry, one duration per round for each step.
type results map[string][][]time.Duration

func (r results) add(target string, durations []time.Duration) {
	r[target] = append(r[target], durations)
}

func (r results) median(target string, step int) time.Duration {
	var ds []time.Duration
	for _, round := range r[target] {
		ds = append(ds, round[step])
	}
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

func speed(s step, d time.Duration) float64 { return s.work / d.Seconds() }

func printRound(out io.Writer, round int, order []target, steps []step, res results) {
	fmt.Fprintf(out, "round %d (%s first)\n", round, order[0].name)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, t := range order {
		durations := res[t.name][round-1]
		for i, s := range steps {
			fmt.Fprintf(tw, "  %s\t%s\t%.3f s\t%.1f %s\n", t.name, s.name, durations[i].Seconds(), speed(s, durations[i]), s.unit)
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
}

func printTable(out io.Writer, cfg config, steps []step, res results) {
	fmt.Fprintf(out, "goal: outpost >= %.2fx distribution (ratio = outpost speed / distribution speed)\n", goalRatio)
	fmt.Fprintf(out, "medians of %d round(s); %s/%s, %d CPUs, %d jobs; fresh data directory per registry per round\n\n",
		cfg.rounds, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cfg.jobs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\tdistribution s\toutpost s\tdistribution\toutpost\tratio")
	for i, s := range steps {
		dist, op := res.median("distribution", i), res.median("outpost", i)
		ratio := dist.Seconds() / op.Seconds()
		mark := ""
		if ratio < goalRatio {
			mark = "  below goal"
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.1f %s\t%.1f %s\t%.2f%s\n", s.name, dist.Seconds(), op.Seconds(),
			speed(s, dist), s.unit, speed(s, op), s.unit, ratio, mark)
	}
	tw.Flush()
}
