package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// The scrub: distribution serves a blob's bytes under its digest without ever hashing
// them again, so a blob damaged on disk would be served forever as good. A scrub
// reads every stored blob back through the storage driver (so it works on any
// driver), hashes it, and moves a blob that does not match its digest aside
// (quarantine): distribution then answers 404 for it, a client's push of it writes it
// again, and a child's next copy of it, or the scrub itself from the parent,
// writes it in place again, so every repository linking it is healed at once.

// blobsRoot is distribution's shared blob store, by algorithm and digest.
const blobsRoot = "/docker/registry/v2/blobs"

// quarantineRoot keeps the bytes of blobs found corrupt, by digest, for an operator
// to look at; a quarantined blob is deleted once it is stored good again.
const quarantineRoot = "/docker/registry/v2/outpost-quarantine"

// ScrubConfig bounds a scrub's I/O so that it does not starve the node's clients.
type ScrubConfig struct {
	// Concurrency is how many blobs are hashed at once. Default 2.
	Concurrency int
	// BytesPerSecond caps the scrub's reads; 0 is no cap. Default 0.
	BytesPerSecond int64
}

// Validate names the setting that is wrong.
func (c ScrubConfig) Validate() error {
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("scrub concurrency %d: must be 1 or more", c.Concurrency)
	case c.BytesPerSecond < 0:
		return fmt.Errorf("scrub rate %d bytes/s: must be 0 (no cap) or more", c.BytesPerSecond)
	}
	return nil
}

// BlobSource reads a good copy of a blob (or manifest) of repo: the parent, for a
// node that has one.
type BlobSource interface {
	OpenBlob(ctx context.Context, repo string, d digest.Digest, manifest bool) (io.ReadCloser, int64, error)
}

// ScrubOptions says what a scrub covers and how it heals.
type ScrubOptions struct {
	// Repositories limits the scrub to what these repositories link (layers, configs
	// and manifests); nil scrubs every stored blob.
	Repositories []string
	// Source, when set, re-fetches each corrupt blob; without it (the root) a
	// corrupt blob is only quarantined and reported.
	Source BlobSource
}

// CorruptBlob is one blob a scrub found bad.
type CorruptBlob struct {
	Digest digest.Digest `json:"digest"`
	// Problem says what is wrong: missing, unreadable, or a digest mismatch.
	Problem string `json:"problem"`
	// Repositories link the blob.
	Repositories []string `json:"repositories,omitempty"`
	// Manifest says some repository links it as a manifest.
	Manifest bool `json:"manifest,omitempty"`
	// Healed says the blob is stored good again (re-fetched from Source).
	Healed bool `json:"healed"`
	// Error is why it was not healed.
	Error string    `json:"error,omitempty"`
	Found time.Time `json:"found"`
}

// ScrubReport is what one scrub checked and found.
type ScrubReport struct {
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Scope    []string      `json:"scope,omitempty"` // repositories; empty is the whole store
	Blobs    int64         `json:"blobs"`           // blobs hashed
	Bytes    int64         `json:"bytes"`           // bytes read
	Corrupt  []CorruptBlob `json:"corrupt"`
}

// Unhealed is how many corrupt blobs are still not stored good.
func (r *ScrubReport) Unhealed() int {
	n := 0
	for _, c := range r.Corrupt {
		if !c.Healed {
			n++
		}
	}
	return n
}

// scrubber holds what outlives one scrub: the quarantine record, the last report,
// the metrics, and the lock that lets one scrub run at a time.
type scrubber struct {
	running chan struct{} // holds a token while a scrub runs

	mu          sync.Mutex
	quarantined map[digest.Digest]CorruptBlob
	last        *ScrubReport

	metrics *scrubMetrics
}

type scrubMetrics struct {
	corrupt, healed, blobs, bytes prometheus.Counter
	lastRun, quarantined          prometheus.Gauge
}

func newScrubMetrics(reg prometheus.Registerer) (*scrubMetrics, error) {
	m := &scrubMetrics{
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_scrub_corrupt_blobs_total",
			Help: "Stored blobs a scrub found not matching their digest (or missing)."}),
		healed: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_scrub_healed_blobs_total",
			Help: "Corrupt blobs stored good again from the parent."}),
		blobs: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_scrub_blobs_checked_total",
			Help: "Stored blobs a scrub hashed."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_scrub_bytes_checked_total",
			Help: "Bytes of stored blobs a scrub read."}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_scrub_last_run_timestamp_seconds",
			Help: "When the last scrub finished (Unix time)."}),
		quarantined: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_scrub_quarantined_blobs",
			Help: "Corrupt blobs set aside and not yet stored good again: not served."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.corrupt, m.healed, m.blobs, m.bytes, m.lastRun, m.quarantined} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ErrScrubRunning is returned when a scrub is asked for while another runs and the
// caller's context ends first.
var ErrScrubRunning = errors.New("another scrub is running")

// Scrub hashes the stored blobs opts covers, quarantines those that do not match
// their digest and re-fetches them from opts.Source. It returns the report; an error
// means the scrub could not finish (storage unreadable, ctx ended), and the report
// says how far it got.
func (r *Registry) Scrub(ctx context.Context, opts ScrubOptions) (*ScrubReport, error) {
	s := r.scrub
	select {
	case s.running <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("scrub: %w (%w)", ErrScrubRunning, ctx.Err())
	}
	defer func() { <-s.running }()

	rep := &ScrubReport{Started: r.cfg.Now().UTC(), Scope: opts.Repositories}
	w := &scrubWalk{r: r, rep: rep}
	if r.cfg.Scrub.BytesPerSecond > 0 {
		w.limit = rate.NewLimiter(rate.Limit(r.cfg.Scrub.BytesPerSecond), scrubChunk)
	}
	var err error
	if opts.Repositories == nil {
		err = w.all(ctx)
	} else {
		err = w.repositories(ctx, opts.Repositories)
	}
	if err == nil && len(w.bad) > 0 {
		err = w.linkers(ctx)
	}
	for _, c := range w.sorted() {
		r.quarantineAndHeal(ctx, &c, opts.Source)
		rep.Corrupt = append(rep.Corrupt, c)
	}
	rep.Finished = r.cfg.Now().UTC()
	s.mu.Lock()
	s.last = rep
	s.mu.Unlock()
	s.metrics.lastRun.Set(float64(rep.Finished.Unix()))
	if err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	return rep, nil
}

// LastScrub is the report of the last scrub since the process started, or nil.
func (r *Registry) LastScrub() *ScrubReport {
	r.scrub.mu.Lock()
	defer r.scrub.mu.Unlock()
	return r.scrub.last
}

// Quarantined lists the blobs found corrupt that are not stored good again: this
// node does not serve them.
func (r *Registry) Quarantined() []CorruptBlob {
	r.scrub.mu.Lock()
	defer r.scrub.mu.Unlock()
	out := make([]CorruptBlob, 0, len(r.scrub.quarantined))
	for _, c := range r.scrub.quarantined {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b CorruptBlob) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return out
}

// scrubChunk is how much is read per rate-limiter wait.
const scrubChunk = 1 << 20

// scrubWalk is one scrub under way.
type scrubWalk struct {
	r     *Registry
	rep   *ScrubReport
	limit *rate.Limiter

	mu  sync.Mutex
	bad map[digest.Digest]*CorruptBlob
	// manifests are the bad digests some repository links as a manifest.
	manifests map[digest.Digest]bool
}

// all checks every blob in the store, found by walking its directories, and then
// every blob a repository links that the walk did not find: on S3 a blob whose
// data object is gone leaves no directory behind (keys are not directories), nor
// does one whose whole directory was removed on the filesystem.
func (w *scrubWalk) all(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.r.scrubConcurrency())
	seen := map[digest.Digest]bool{}
	err := w.r.driver.Walk(ctx, blobsRoot, func(fi storagedriver.FileInfo) error {
		// blobs/<alg>/<2 hex>/<hex>: a blob's directory; its data file is checked.
		rel := strings.Split(strings.TrimPrefix(fi.Path(), blobsRoot+"/"), "/")
		if !fi.IsDir() || len(rel) < 3 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(rel[0]), rel[2])
		if d.Validate() != nil {
			return storagedriver.ErrSkipDir // not distribution's layout: leave it alone
		}
		if gctx.Err() != nil {
			return gctx.Err()
		}
		seen[d] = true
		g.Go(func() error { return w.check(gctx, d) })
		return storagedriver.ErrSkipDir
	})
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		err = nil // nothing stored yet
	}
	if err == nil {
		var repos []string
		if repos, err = w.r.Repositories(gctx); err == nil {
			err = w.checkLinked(gctx, g, repos, seen)
		}
	}
	if gerr := g.Wait(); err == nil {
		err = gerr
	}
	return err
}

// repositories checks the blobs and manifests the named repositories link.
func (w *scrubWalk) repositories(ctx context.Context, repos []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.r.scrubConcurrency())
	err := w.checkLinked(gctx, g, repos, map[digest.Digest]bool{})
	if gerr := g.Wait(); err == nil {
		err = gerr
	}
	return err
}

// checkLinked checks, in g, the blobs and manifests repos link that are not in seen.
func (w *scrubWalk) checkLinked(ctx context.Context, g *errgroup.Group, repos []string, seen map[digest.Digest]bool) error {
	for _, repo := range repos {
		for _, dir := range []string{"_layers", "_manifests/revisions"} {
			ds, err := w.r.linkedDigests(ctx, path.Join(repositoriesRoot, repo, dir))
			if err != nil {
				return fmt.Errorf("repository %s: %w", repo, err)
			}
			for _, d := range ds {
				if seen[d] || d.Algorithm() != digest.SHA256 {
					continue // other algorithms are aliases of a sha256 blob
				}
				seen[d] = true
				g.Go(func() error { return w.check(ctx, d) })
			}
		}
	}
	return nil
}

// linkedDigests lists the digests under a repository's _layers or
// _manifests/revisions directory (<alg>/<hex>/link).
func (r *Registry) linkedDigests(ctx context.Context, dir string) ([]digest.Digest, error) {
	algs, err := r.driver.List(ctx, dir)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := r.driver.List(ctx, a)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			d := digest.NewDigestFromEncoded(digest.Algorithm(path.Base(a)), path.Base(h))
			if d.Validate() == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// check hashes one stored blob. A blob that does not match is recorded, not an error:
// the scrub goes on. Only a failure of the storage itself stops it.
func (w *scrubWalk) check(ctx context.Context, d digest.Digest) error {
	p := blobDataPath(d)
	rc, err := w.r.driver.Reader(ctx, p, 0)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		if c, known := w.r.quarantinedBlob(d); known {
			// Set aside earlier and not stored good since: report it again and try
			// to heal it again (the parent may be back), but do not count it twice.
			w.add(c.Digest, c.Problem, false)
			return nil
		}
		w.corrupt(d, "missing: the blob is linked or has a directory but its data file is gone")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read blob %s: %w", d, err)
	}
	defer rc.Close()
	v := d.Verifier()
	n, err := io.Copy(v, w.limited(ctx, rc))
	w.mu.Lock()
	w.rep.Blobs++
	w.rep.Bytes += n
	w.mu.Unlock()
	w.r.scrub.metrics.blobs.Inc()
	w.r.scrub.metrics.bytes.Add(float64(n))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	switch {
	case err != nil:
		w.corrupt(d, fmt.Sprintf("unreadable after %d bytes: %v", n, err))
	case !v.Verified():
		w.corrupt(d, fmt.Sprintf("content does not match the digest (%d bytes on disk)", n))
	case w.r.isQuarantined(d):
		w.r.unquarantine(ctx, d) // stored good again (a client pushed it)
	}
	return nil
}

func (w *scrubWalk) corrupt(d digest.Digest, problem string) { w.add(d, problem, true) }

func (w *scrubWalk) add(d digest.Digest, problem string, count bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bad == nil {
		w.bad = map[digest.Digest]*CorruptBlob{}
	}
	w.bad[d] = &CorruptBlob{Digest: d, Problem: problem, Found: w.r.cfg.Now().UTC()}
	if count {
		w.r.scrub.metrics.corrupt.Inc()
	}
}

// linkers finds the repositories that link each bad blob: a re-fetch needs a
// repository the parent holds it in, and the report names them.
func (w *scrubWalk) linkers(ctx context.Context) error {
	w.manifests = map[digest.Digest]bool{}
	return w.r.walkRepositoryLinks(ctx, func(l repositoryLink) error {
		if c, bad := w.bad[l.Digest]; bad {
			if !slices.Contains(c.Repositories, l.Repo) {
				c.Repositories = append(c.Repositories, l.Repo)
			}
			if l.Manifest {
				w.manifests[l.Digest] = true
			}
		}
		return nil
	})
}

func (w *scrubWalk) sorted() []CorruptBlob {
	out := make([]CorruptBlob, 0, len(w.bad))
	for _, c := range w.bad {
		slices.Sort(c.Repositories)
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b CorruptBlob) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	for i := range out {
		if w.manifests[out[i].Digest] {
			out[i].Manifest = true
		}
	}
	return out
}

// limited reads rc at the scrub's rate.
func (w *scrubWalk) limited(ctx context.Context, rc io.Reader) io.Reader {
	if w.limit == nil {
		return rc
	}
	return &rateReader{ctx: ctx, r: rc, l: w.limit}
}

type rateReader struct {
	ctx context.Context
	r   io.Reader
	l   *rate.Limiter
}

func (r *rateReader) Read(p []byte) (int, error) {
	if len(p) > scrubChunk {
		p = p[:scrubChunk]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.WaitN(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (r *Registry) scrubConcurrency() int {
	if r.cfg.Scrub.Concurrency > 0 {
		return r.cfg.Scrub.Concurrency
	}
	return 2
}

// quarantineAndHeal sets a corrupt blob aside, so that it is no longer served, then
// writes it again from src if there is one. c records the outcome.
func (r *Registry) quarantineAndHeal(ctx context.Context, c *CorruptBlob, src BlobSource) {
	log := r.cfg.Logger.With("digest", c.Digest, "problem", c.Problem, "repositories", c.Repositories)
	if err := r.quarantine(ctx, c.Digest); err != nil {
		c.Error = "quarantine: " + err.Error()
		log.Error("corrupt blob found; could not set it aside, it may still be served", "err", err)
		r.recordQuarantine(*c)
		return
	}
	r.recordQuarantine(*c)
	if src == nil {
		c.Error = "no parent to fetch it from: push the image again, or restore the blob"
		log.Error("corrupt blob found and set aside: it is no longer served; push the images holding it again (or restore the blob) to heal it")
		return
	}
	err := errors.New("no repository links it")
	for _, repo := range c.Repositories {
		if err = r.refetch(ctx, repo, c.Digest, c.Manifest, src); err == nil {
			break
		}
	}
	if err != nil {
		c.Error = "re-fetch: " + err.Error()
		log.Error("corrupt blob found and set aside; re-fetching it from the parent failed: it is not served until a resync or scrub heals it", "err", err)
		return
	}
	c.Healed, c.Error = true, ""
	r.scrub.metrics.healed.Inc()
	log.Warn("corrupt blob found and healed: stored again from the parent")
}

// quarantine moves a blob's data out of distribution's reach.
func (r *Registry) quarantine(ctx context.Context, d digest.Digest) error {
	if err := r.incoming.claim(ctx, d); err != nil {
		return err
	}
	defer r.incoming.release(d)
	q := path.Join(quarantineRoot, d.Encoded())
	err := r.driver.Move(ctx, blobDataPath(d), q)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		// Missing: nothing to set aside, but a restart must go on reporting it.
		if _, err := r.driver.Stat(ctx, q); err == nil {
			return nil
		}
		return r.driver.PutContent(ctx, q, nil)
	}
	return err
}

// refetch writes d again from src, in place: every repository linking it is healed.
func (r *Registry) refetch(ctx context.Context, repo string, d digest.Digest, manifest bool, src BlobSource) error {
	if err := r.incoming.claim(ctx, d); err != nil {
		return err
	}
	defer r.incoming.release(d)
	if _, err := r.driver.Stat(ctx, blobDataPath(d)); err == nil {
		r.unquarantine(ctx, d) // a concurrent copy or push already stored it again
		return nil
	}
	// Start from nothing: whatever an earlier write left aside is suspect too.
	_ = r.driver.Delete(ctx, path.Join(incomingRoot, d.Encoded()))
	first, size, err := src.OpenBlob(ctx, repo, d, manifest)
	if err != nil {
		return fmt.Errorf("from %s: %w", repo, err)
	}
	defer func() {
		if first != nil {
			first.Close()
		}
	}()
	if size < 0 {
		return fmt.Errorf("from %s: the source did not say the blob's size", repo)
	}
	// writeAside reads from 0 first (nothing is aside), so the answer already
	// open serves it; a later resume opens the source again and skips what it has.
	open := func(ctx context.Context, offset int64) (io.ReadCloser, error) {
		if first != nil && offset == 0 {
			rc := first
			first = nil
			return rc, nil
		}
		rc, _, err := src.OpenBlob(ctx, repo, d, manifest)
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, rc, offset); err != nil {
			rc.Close()
			return nil, err
		}
		return rc, nil
	}
	if err := r.writeAside(ctx, d, size, open); err != nil {
		return fmt.Errorf("from %s: %w", repo, err)
	}
	r.unquarantine(ctx, d)
	return nil
}

func (r *Registry) recordQuarantine(c CorruptBlob) {
	r.scrub.mu.Lock()
	defer r.scrub.mu.Unlock()
	if r.scrub.quarantined == nil {
		r.scrub.quarantined = map[digest.Digest]CorruptBlob{}
	}
	r.scrub.quarantined[c.Digest] = c
	r.scrub.metrics.quarantined.Set(float64(len(r.scrub.quarantined)))
}

func (r *Registry) isQuarantined(d digest.Digest) bool {
	_, ok := r.quarantinedBlob(d)
	return ok
}

func (r *Registry) quarantinedBlob(d digest.Digest) (CorruptBlob, bool) {
	r.scrub.mu.Lock()
	defer r.scrub.mu.Unlock()
	c, ok := r.scrub.quarantined[d]
	return c, ok
}

// unquarantine forgets a blob that is stored good again (re-fetched, copied or
// pushed) and drops its bad bytes.
func (r *Registry) unquarantine(ctx context.Context, d digest.Digest) {
	r.scrub.mu.Lock()
	_, ok := r.scrub.quarantined[d]
	delete(r.scrub.quarantined, d)
	r.scrub.metrics.quarantined.Set(float64(len(r.scrub.quarantined)))
	r.scrub.mu.Unlock()
	if ok {
		_ = r.driver.Delete(ctx, path.Join(quarantineRoot, d.Encoded()))
	}
}

// loadQuarantine reads what earlier processes set aside and is still not stored
// again, so that a restart goes on reporting it.
func (r *Registry) loadQuarantine(ctx context.Context) error {
	parts, err := r.driver.List(ctx, quarantineRoot)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range parts {
		d := digest.NewDigestFromEncoded(digest.SHA256, path.Base(p))
		if d.Validate() != nil {
			continue
		}
		if _, err := r.driver.Stat(ctx, blobDataPath(d)); err == nil {
			_ = r.driver.Delete(ctx, p) // stored again while the node was down
			continue
		}
		found := r.cfg.Now().UTC()
		if fi, err := r.driver.Stat(ctx, p); err == nil {
			found = fi.ModTime().UTC()
		}
		r.recordQuarantine(CorruptBlob{Digest: d, Problem: "found corrupt by an earlier scrub and set aside", Found: found})
	}
	return nil
}

// serveQuarantined answers a read of a quarantined blob with a 404 that says why,
// unless it was stored good again meanwhile (a client's push, a copy).
func (r *Registry) serveQuarantined(ctx context.Context, d digest.Digest) (string, bool) {
	if !r.isQuarantined(d) {
		return "", false
	}
	if _, err := r.driver.Stat(ctx, blobDataPath(d)); err == nil {
		r.unquarantine(ctx, d)
		return "", false
	}
	return fmt.Sprintf("blob %s was found corrupt on node %s's storage and is not served: push it again, or resync the node", d, r.cfg.Node), true
}

// Repositories lists every repository the node stores.
func (r *Registry) Repositories(ctx context.Context) ([]string, error) {
	var out []string
	buf := make([]string, 100)
	last := ""
	for {
		k, err := r.namespace.Repositories(ctx, buf, last)
		out = append(out, buf[:k]...)
		if k > 0 {
			last = buf[k-1]
		}
		if errors.Is(err, io.EOF) || (err == nil && k == 0) {
			return out, nil
		}
		if err != nil {
			if errors.As(err, new(storagedriver.PathNotFoundError)) {
				return out, nil
			}
			return nil, fmt.Errorf("list repositories: %w", err)
		}
	}
}
