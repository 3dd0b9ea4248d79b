package registry

import (
	"context"
	"encoding/json"
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
	"golang.org/x/sync/errgroup"
)

// One garbage collection's steps (gc.go has the rule, the record of requests and
// the ways to run it): scan the repositories, mark what manifests reference, sweep
// the blobs, then the referrers index and the parts written aside.

// gcWalk is one GC under way.
type gcWalk struct {
	r   *Registry
	rep *GCReport
	dry bool
	now time.Time

	revisions []revision
	links     []layerLink
	// aliases maps repo@alias-digest to the sha256 digest its link names.
	aliases map[string]digest.Digest

	mu     sync.Mutex
	marked map[digest.Digest]bool
}

type revision struct {
	repo string
	d    digest.Digest
}

// layerLink is <repo>/_layers/<alg>/<hex>/link.
type layerLink struct {
	repo   string
	d      digest.Digest // the digest the link is named by
	target digest.Digest // the stored blob it resolves to
	mod    time.Time
}

func (w *gcWalk) run(ctx context.Context) error {
	w.now = w.r.gc.cfg.Now()
	w.marked = map[digest.Digest]bool{}
	w.aliases = map[string]digest.Digest{}
	if err := w.scanRepositories(ctx); err != nil {
		return fmt.Errorf("scan repositories: %w", err)
	}
	if err := w.mark(ctx); err != nil {
		return fmt.Errorf("mark: %w", err)
	}
	if err := w.sweep(ctx); err != nil {
		return fmt.Errorf("sweep blobs: %w", err)
	}
	if err := w.sweepReferrers(ctx); err != nil {
		return fmt.Errorf("referrers index: %w", err)
	}
	if err := w.sweepParts(ctx); err != nil {
		return fmt.Errorf("parts written aside: %w", err)
	}
	return nil
}

// scanRepositories lists every manifest revision and blob link of every repository.
func (w *gcWalk) scanRepositories(ctx context.Context) error {
	repos := map[string]bool{}
	err := w.r.walkRepositoryLinks(ctx, func(l repositoryLink) error {
		repos[l.Repo] = true
		target := l.Digest
		if l.Digest.Algorithm() != digest.SHA256 {
			b, err := w.r.driver.GetContent(ctx, l.Path)
			if errors.As(err, new(storagedriver.PathNotFoundError)) {
				return nil // removed while we walked
			}
			if err != nil {
				return err
			}
			if target, err = digest.Parse(strings.TrimSpace(string(b))); err != nil {
				w.warn("alias link %s holds no digest: left alone", l.Path)
				return nil
			}
			w.aliases[l.Repo+"@"+l.Digest.String()] = target
		}
		if l.Manifest {
			w.revisions = append(w.revisions, revision{repo: l.Repo, d: l.Digest})
		} else {
			w.links = append(w.links, layerLink{repo: l.Repo, d: l.Digest, target: target, mod: l.Info.ModTime()})
		}
		return nil
	})
	w.rep.Repositories = len(repos)
	return err
}

func (w *gcWalk) warn(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rep.Warnings = append(w.rep.Warnings, fmt.Sprintf(format, a...))
}

func (w *gcWalk) markDigest(d digest.Digest) {
	w.mu.Lock()
	w.marked[d] = true
	w.mu.Unlock()
}

// resolve is the stored blob repo's reference d names.
func (w *gcWalk) resolve(repo string, d digest.Digest) (digest.Digest, bool) {
	if d.Algorithm() == digest.SHA256 {
		return d, true
	}
	t, ok := w.aliases[repo+"@"+d.String()]
	return t, ok
}

// parsed is one manifest's content as mark needs it.
type parsed struct {
	refs     []digest.Digest // everything it references
	children []digest.Digest // an index's manifests
	err      error           // a readError: it could not be read or parsed
}

// mark reads every stored manifest once, and the children of indexes that are no
// longer revisions themselves, and marks them and what they reference.
func (w *gcWalk) mark(ctx context.Context) error {
	// Each manifest's content is read once, however many repositories hold it.
	seen := map[digest.Digest]*parsed{}
	var pending []digest.Digest
	for _, rv := range w.revisions {
		if target, ok := w.resolve(rv.repo, rv.d); ok && seen[target] == nil {
			seen[target] = &parsed{}
			pending = append(pending, target)
		}
	}
	for len(pending) > 0 {
		if err := w.readManifests(ctx, pending, seen); err != nil {
			return err
		}
		var next []digest.Digest
		for _, d := range pending {
			for _, c := range seen[d].children {
				if c.Algorithm() == digest.SHA256 && seen[c] == nil {
					seen[c] = &parsed{}
					next = append(next, c)
				}
			}
		}
		pending = next
	}
	keepRepo := map[string]bool{}
	manifests := map[digest.Digest]bool{}
	visited := map[digest.Digest]bool{}
	var markTree func(repo string, d digest.Digest)
	markTree = func(repo string, d digest.Digest) {
		if visited[d] {
			return
		}
		visited[d] = true
		w.markDigest(d)
		p := seen[d]
		if p == nil || p.err != nil {
			return
		}
		for _, r := range p.refs {
			w.markDigest(r)
			if t, ok := w.resolve(repo, r); ok {
				markTree(repo, t)
			}
		}
	}
	for _, rv := range w.revisions {
		target, ok := w.resolve(rv.repo, rv.d)
		if !ok {
			continue
		}
		manifests[target] = true
		w.markDigest(rv.d)
		if p := seen[target]; p.err != nil {
			if !keepRepo[rv.repo] {
				w.warn("manifest %s in %s cannot be read (%v): every blob %s links is kept", target, rv.repo, p.err, rv.repo)
			}
			keepRepo[rv.repo] = true
		}
		markTree(rv.repo, target)
	}
	for _, l := range w.links {
		if keepRepo[l.repo] {
			w.markDigest(l.target)
		}
	}
	w.rep.Manifests = len(manifests)
	return nil
}

// readManifests reads and parses ds into seen, a few at once. Only a storage that
// does not answer is an error; a manifest that cannot be read is recorded as such.
func (w *gcWalk) readManifests(ctx context.Context, ds []digest.Digest, seen map[digest.Digest]*parsed) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.r.gc.cfg.Concurrency)
	for _, d := range ds {
		p := seen[d] // each goroutine fills its own entry; the map is not written
		g.Go(func() error {
			body, err := w.readManifest(gctx, d)
			var rerr *readError
			switch {
			case errors.As(err, &rerr):
				p.err = rerr.err
			case err != nil:
				return err
			default:
				p.refs, p.children = manifestReferences(body), manifestChildren(body)
			}
			return nil
		})
	}
	return g.Wait()
}

// readError is a manifest that cannot be read or parsed, as opposed to a storage
// that does not answer: GC goes on, keeping what the manifest's repository links.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

func (w *gcWalk) readManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	rc, err := w.r.driver.Reader(ctx, blobDataPath(d), 0)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil, &readError{errors.New("its content is missing (set aside by a scrub, or lost)")}
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxManifestSize {
		return nil, &readError{fmt.Errorf("larger than %d bytes", maxManifestSize)}
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, &readError{fmt.Errorf("not a JSON manifest: %w", err)}
	}
	return body, nil
}

// gcCandidate is an unreferenced stored blob old enough to go, or a link to a blob
// that is gone (no data).
type gcCandidate struct {
	d       digest.Digest
	size    int64
	hasData bool
}

// sweep finds the unreferenced blobs, keeps those the grace rule keeps, and removes
// the others with every repository link to them, a batch at a time.
func (w *gcWalk) sweep(ctx context.Context) error {
	g := w.r.gc
	grace := g.cfg.Grace
	youngLink := map[digest.Digest]bool{}
	linksOf := map[digest.Digest][]layerLink{}
	for _, l := range w.links {
		linksOf[l.target] = append(linksOf[l.target], l)
		if w.now.Sub(l.mod) < grace {
			youngLink[l.target] = true
		}
	}
	stored := map[digest.Digest]bool{}
	var cands []gcCandidate
	err := w.r.driver.Walk(ctx, blobsRoot, func(fi storagedriver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		// blobs/<alg>/<2 hex>/<hex>/data
		rel := strings.Split(strings.TrimPrefix(fi.Path(), blobsRoot+"/"), "/")
		if fi.IsDir() || len(rel) != 4 || rel[3] != "data" {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(rel[0]), rel[2])
		if d.Validate() != nil || !strings.HasPrefix(rel[2], rel[1]) {
			return nil // not distribution's layout: leave it alone
		}
		stored[d] = true
		switch {
		case w.marked[d]:
			w.rep.Referenced++
		case w.now.Sub(fi.ModTime()) < grace || youngLink[d]:
			w.rep.Recent++
			w.rep.RecentBytes += fi.Size()
		default:
			cands = append(cands, gcCandidate{d: d, size: fi.Size(), hasData: true})
		}
		return nil
	})
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		err = nil
	}
	if err != nil {
		return err
	}
	// Links to blobs that are gone (a GC that stopped between a blob and its links).
	for d, ls := range linksOf {
		if !stored[d] && !w.marked[d] && !youngLink[d] && len(ls) > 0 {
			cands = append(cands, gcCandidate{d: d})
		}
	}
	slices.SortFunc(cands, func(a, b gcCandidate) int { return strings.Compare(string(a.d), string(b.d)) })
	for len(cands) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(cands), g.cfg.Batch)
		if err := w.sweepBatch(ctx, cands[:n], linksOf); err != nil {
			return err
		}
		cands = cands[n:]
	}
	return nil
}

// sweepBatch removes a batch of candidates under the lock every request naming a
// blob takes to record it: a blob recorded before is kept, a request after finds
// the blob gone.
func (w *gcWalk) sweepBatch(ctx context.Context, batch []gcCandidate, linksOf map[digest.Digest][]layerLink) error {
	g := w.r.gc
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Now()
	for _, c := range batch {
		if g.recent(c.d, now) {
			if c.hasData {
				w.rep.Recent++
				w.rep.RecentBytes += c.size
			}
			continue
		}
		if !w.dry {
			if c.hasData {
				if err := w.r.driver.Delete(ctx, path.Dir(blobDataPath(c.d))); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
					return fmt.Errorf("remove blob %s: %w", c.d, err)
				}
			}
			for _, l := range linksOf[c.d] {
				if err := w.r.driver.Delete(ctx, path.Dir(layerAliasLink(l.repo, l.d))); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
					return fmt.Errorf("remove the link of %s in %s: %w", l.d, l.repo, err)
				}
			}
		}
		if c.hasData {
			w.rep.Blobs++
			w.rep.Bytes += c.size
		}
		w.rep.LayerLinks += int64(len(linksOf[c.d]))
	}
	return nil
}

// referrerEntry is one file of the referrers index that names a referrer.
type referrerEntry struct {
	path     string
	referrer digest.Digest
}

// sweepReferrers drops the index entries of referrers whose manifests are gone
// from their repository (an index written before deletes kept it in step, or a
// delete that failed half way). Each repository's entries are checked again and
// removed under its manifest lock, so that a referrer pushed meanwhile keeps its
// entry.
func (w *gcWalk) sweepReferrers(ctx context.Context) error {
	exists := map[revision]bool{}
	for _, rv := range w.revisions {
		exists[rv] = true
	}
	stale := map[string][]referrerEntry{}
	err := w.r.driver.Walk(ctx, referrersRoot, func(fi storagedriver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fi.IsDir() || w.now.Sub(fi.ModTime()) < w.r.gc.cfg.Grace {
			return nil
		}
		rest := strings.TrimPrefix(fi.Path(), referrersRoot+"/")
		var repo string
		var d digest.Digest
		if r, tail, ok := strings.Cut(rest, "/_subjects/"); ok {
			parts := strings.Split(tail, "/") // <alg>/<hex>/<alg>-<hex>
			if len(parts) != 3 {
				return nil
			}
			alg, hex, ok := strings.Cut(parts[2], "-")
			if !ok {
				return nil
			}
			repo, d = r, digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		} else if r, tail, ok := strings.Cut(rest, "/_referrers/"); ok {
			parts := strings.Split(tail, "/") // <alg>/<hex>
			if len(parts) != 2 {
				return nil
			}
			repo, d = r, digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
		} else {
			return nil
		}
		if d.Validate() != nil || exists[revision{repo, d}] {
			return nil
		}
		stale[repo] = append(stale[repo], referrerEntry{path: fi.Path(), referrer: d})
		return nil
	})
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		err = nil
	}
	if err != nil {
		return err
	}
	repos := make([]string, 0, len(stale))
	for repo := range stale {
		repos = append(repos, repo)
	}
	slices.Sort(repos)
	for _, repo := range repos {
		if err := w.dropReferrerEntries(ctx, repo, stale[repo]); err != nil {
			return err
		}
	}
	return nil
}

// referrersLockWait bounds how long GC waits for a repository's manifest writes
// before it leaves that repository's stale entries to the next run.
const referrersLockWait = 5 * time.Second

func (w *gcWalk) dropReferrerEntries(ctx context.Context, repo string, entries []referrerEntry) error {
	release, err := w.r.repos.delete(ctx, repo+manifestsKey, referrersLockWait)
	if errors.Is(err, ErrRepositoryBusy) {
		w.warn("referrers index of %s: manifest writes under way, its stale entries are left to the next run", repo)
		return nil
	}
	if err != nil {
		return err
	}
	defer release()
	gone := map[digest.Digest]bool{}
	dirs := map[string]bool{}
	for _, e := range entries {
		if _, err := w.r.driver.Stat(ctx, manifestAliasLink(repo, e.referrer)); err == nil {
			continue // pushed again since the scan
		} else if !errors.As(err, new(storagedriver.PathNotFoundError)) {
			return err
		}
		if !w.dry {
			if err := w.r.driver.Delete(ctx, e.path); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
				return fmt.Errorf("remove %s: %w", e.path, err)
			}
		}
		gone[e.referrer] = true
		if strings.Contains(e.path, "/_subjects/") {
			dirs[path.Dir(e.path)] = true
		}
	}
	w.rep.ReferrerEntries += int64(len(gone))
	if w.dry {
		return nil
	}
	// A subject left without referrers: its directory goes too.
	for dir := range dirs {
		left, err := w.r.driver.List(ctx, dir)
		if err == nil && len(left) == 0 {
			_ = w.r.driver.Delete(ctx, dir)
		}
	}
	return nil
}

// sweepParts drops parts written aside whose write has not gone on for PartGrace,
// unless a write holds them now.
func (w *gcWalk) sweepParts(ctx context.Context) error {
	parts, err := w.r.driver.List(ctx, incomingRoot)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range parts {
		fi, err := w.r.driver.Stat(ctx, p)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.IsDir() || w.now.Sub(fi.ModTime()) < w.r.gc.cfg.PartGrace {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, path.Base(p))
		if d.Validate() == nil && !w.r.incoming.tryClaim(d) {
			continue // a write goes on with it now
		}
		if !w.dry {
			err = w.r.driver.Delete(ctx, p)
		}
		if d.Validate() == nil {
			w.r.incoming.release(d)
		}
		if err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		w.rep.Parts++
		w.rep.PartBytes += fi.Size()
	}
	return nil
}

// tryClaim holds d if no write holds it, and says whether it did.
func (c *claims) tryClaim(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.m[d]; busy {
		return false
	}
	if c.m == nil {
		c.m = map[digest.Digest]chan struct{}{}
	}
	c.m[d] = make(chan struct{})
	return true
}
