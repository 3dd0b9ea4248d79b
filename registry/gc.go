package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/events"
)

// Garbage collection: a deleted image leaves its blobs in distribution's shared blob
// store for ever (distribution only unlinks). GC marks every blob some stored
// manifest references, in any repository, and removes the rest, with the repository
// links to them; it also drops the referrers index entries of deleted manifests and
// the parts written aside (local.go) that no write went on with.
//
// distribution's storage.MarkAndSweep is not used: it prints to stdout, resolves no
// sha512 alias (a manifest naming a layer by sha512 would lose that layer), has no
// grace for what is being pushed, and removes repository links outside any lock, so a
// push or a copy running beside it loses blobs it has just found or uploaded.
//
// The grace rule. An unreferenced blob is removed only if all of these hold:
//   - its data was written longer than Grace ago (an upload that just completed, a
//     copy's write renamed into place);
//   - no repository linked it within Grace (an upload or a mount of a blob that was
//     already stored links it anew, without writing it);
//   - no request at this process named it within Grace: a blob HEAD or GET by a
//     caller who may push, an upload's or mount's digest, a manifest PUT's references
//     (and its own digest), a replication write in process. Each is recorded before
//     the request is served, and the sweep checks the record and removes blobs under
//     the same lock, batch by batch: a client or a copy that found a blob and is about
//     to push a manifest naming it keeps it, and one that comes after the blob went
//     is told it is missing and uploads it again.
//
// GC never removes a manifest: every stored manifest, tagged or not, is a root, so
// whatever a message waiting in an outbox names keeps its content until a delete
// removes the manifest (and then the copy applies the delete). Referrers are
// manifests too and keep what they reference; a referrer does not keep its deleted
// subject. Uploads in progress live under the repositories' _uploads (distribution
// purges those after a week) and are never candidates.

// DefaultGCGrace is how young an unreferenced blob may be and still be kept.
const DefaultGCGrace = time.Hour

// minGCGrace is the least grace accepted: a push in progress (blobs first, the
// manifest last) must not lose its blobs to a GC on another clock's idea of "old".
const minGCGrace = time.Minute

// GCConfig configures garbage collection. Zero fields take the defaults noted.
type GCConfig struct {
	// Grace keeps unreferenced blobs younger than it, linked or named within it
	// (see the grace rule above). Default DefaultGCGrace, at least a minute.
	Grace time.Duration
	// PartGrace is how long a part written aside may wait for its write to go on
	// before GC drops it. Default a week (a site's link can stay closed for days and
	// the next copy resumes from the part).
	PartGrace time.Duration
	// Schedule, when set, runs GC at each time it fires (RunGCSchedule).
	Schedule events.Schedule
	// Batch is how many blobs are removed per hold of the lock that requests naming
	// a blob pass through. Default 64.
	Batch int
	// Concurrency is how many manifests are read at once while marking. Default 4.
	Concurrency int
	// Tick is how often the schedule's clock is read. Default 1s.
	Tick time.Duration
	// Now is the clock ages and the schedule are read by; default the registry's.
	Now func() time.Time
}

// DefaultGCConfig is the configuration New uses for zero fields.
func DefaultGCConfig() GCConfig {
	return GCConfig{Grace: DefaultGCGrace, PartGrace: staleIncoming, Batch: 64, Concurrency: 4, Tick: time.Second}
}

// Validate names the setting that is wrong.
func (c GCConfig) Validate() error {
	switch {
	case c.Grace != 0 && c.Grace < minGCGrace:
		return fmt.Errorf("gc grace %s: must be at least %s, so that a push in progress keeps its blobs", c.Grace, minGCGrace)
	case c.PartGrace != 0 && c.PartGrace < minGCGrace:
		return fmt.Errorf("gc part grace %s: must be at least %s", c.PartGrace, minGCGrace)
	case c.Batch < 0:
		return fmt.Errorf("gc batch %d: must be 1 or more", c.Batch)
	case c.Concurrency < 0:
		return fmt.Errorf("gc concurrency %d: must be 1 or more", c.Concurrency)
	case c.Tick < 0:
		return fmt.Errorf("gc tick %s: must be positive", c.Tick)
	}
	return nil
}

// withDefaults fills zero fields.
func (c GCConfig) withDefaults(now func() time.Time) GCConfig {
	d := DefaultGCConfig()
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.PartGrace == 0 {
		c.PartGrace = d.PartGrace
	}
	if c.Batch == 0 {
		c.Batch = d.Batch
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.Now == nil {
		c.Now = now
	}
	return c
}

// GCOptions says how one GC runs.
type GCOptions struct {
	// DryRun finds and counts what would be removed, and removes nothing.
	DryRun bool
	// Why names the trigger in the log and the report ("asked", "scheduled").
	Why string
}

// GCReport is what one GC found and removed (or, in a dry run, would remove).
type GCReport struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	DryRun   bool      `json:"dryRun"`
	Why      string    `json:"why,omitempty"`
	// Repositories and Manifests were scanned; Referenced blobs were kept as such.
	Repositories int   `json:"repositories"`
	Manifests    int   `json:"manifests"`
	Referenced   int64 `json:"referencedBlobs"`
	// Blobs and Bytes are the unreferenced blobs removed.
	Blobs int64 `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// LayerLinks are repository links to removed (or already missing) blobs dropped.
	LayerLinks int64 `json:"layerLinks"`
	// Recent and RecentBytes are unreferenced blobs the grace rule kept.
	Recent      int64 `json:"recentBlobs"`
	RecentBytes int64 `json:"recentBytes"`
	// ReferrerEntries are deleted manifests whose referrers index entries went.
	ReferrerEntries int64 `json:"referrerEntries"`
	// Parts and PartBytes are stale parts written aside that were dropped.
	Parts     int64 `json:"parts"`
	PartBytes int64 `json:"partBytes"`
	// Warnings are what an operator should look at (an unreadable manifest, whose
	// repository's blobs were all kept).
	Warnings []string `json:"warnings,omitempty"`
	// Error is why the GC stopped early; the figures say how far it got.
	Error string `json:"error,omitempty"`
}

// Reclaimed is the bytes removed: blobs and parts.
func (r *GCReport) Reclaimed() int64 { return r.Bytes + r.PartBytes }

// ErrGCRunning is returned when a GC is asked for while another runs.
var ErrGCRunning = errors.New("a garbage collection is already running")

// gcState is what outlives one GC: the requests' record, the reports, the metrics.
type gcState struct {
	cfg     GCConfig
	running atomic.Bool

	// mu guards seen; a sweep holds it while it checks and removes a batch.
	mu   sync.Mutex
	seen map[digest.Digest]time.Time
	// overflow is when the record last had no room: until Grace after it, the sweep
	// keeps every blob (what was not recorded may be in use).
	overflow time.Time
	pruned   time.Time

	reportMu sync.Mutex
	last     *GCReport // the last GC, dry or not
	lastRun  *GCReport // the last GC that was not a dry run
	next     atomic.Pointer[time.Time]

	metrics *gcMetrics
}

// maxSeen bounds the requests' record; past it GC keeps everything for a grace.
const maxSeen = 1 << 20

type gcMetrics struct {
	bytes, blobs prometheus.Counter
	runs         *prometheus.CounterVec
	lastRun      prometheus.Gauge
}

func newGCMetrics(reg prometheus.Registerer) (*gcMetrics, error) {
	m := &gcMetrics{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_gc_reclaimed_bytes_total",
			Help: "Bytes garbage collection removed: unreferenced blobs and stale parts written aside."}),
		blobs: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_gc_reclaimed_blobs_total",
			Help: "Unreferenced blobs garbage collection removed."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_gc_runs_total",
			Help: "Garbage collections run, by result (ok, failed) and whether they were dry runs."}, []string{"result", "dry_run"}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "outpost_gc_last_run_timestamp_seconds",
			Help: "When the last garbage collection that was not a dry run finished without error (Unix time)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.bytes, m.blobs, m.runs, m.lastRun} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// note records that a request named these digests of repo now (see the grace
// rule). A digest other than sha256 is an alias: its sha256 blob is recorded too.
func (r *Registry) note(ctx context.Context, repo string, ds ...digest.Digest) {
	all := make([]digest.Digest, 0, len(ds))
	for _, d := range ds {
		if d.Validate() != nil {
			continue
		}
		all = append(all, d)
		if d.Algorithm() != digest.SHA256 && repo != "" {
			all = append(all, r.aliasTargets(ctx, repo, d)...)
		}
	}
	if len(all) == 0 {
		return
	}
	g := r.gc
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Now()
	if g.seen == nil {
		g.seen = map[digest.Digest]time.Time{}
	}
	// Expired records go once a grace; a full record is pruned at most once a
	// minute, so that a flood of requests costs no scan each.
	if since := now.Sub(g.pruned); since > g.cfg.Grace || since < 0 || (len(g.seen)+len(all) > maxSeen && since > time.Minute) {
		g.prune(now)
	}
	for _, d := range all {
		if len(g.seen) >= maxSeen {
			g.overflow = now
			return
		}
		g.seen[d] = now
	}
}

// prune drops records older than the grace; the caller holds g.mu.
func (g *gcState) prune(now time.Time) {
	for d, t := range g.seen {
		if now.Sub(t) >= g.cfg.Grace {
			delete(g.seen, d)
		}
	}
	g.pruned = now
}

// recent says whether a request named d within the grace; the caller holds g.mu.
func (g *gcState) recent(d digest.Digest, now time.Time) bool {
	if !g.overflow.IsZero() && now.Sub(g.overflow) < g.cfg.Grace {
		return true
	}
	t, ok := g.seen[d]
	return ok && now.Sub(t) < g.cfg.Grace
}

// aliasTargets reads the sha256 digests repo's alias links for d point at.
func (r *Registry) aliasTargets(ctx context.Context, repo string, d digest.Digest) []digest.Digest {
	var out []digest.Digest
	for _, p := range []string{layerAliasLink(repo, d), manifestAliasLink(repo, d)} {
		if b, err := r.driver.GetContent(ctx, p); err == nil {
			if t, err := digest.Parse(strings.TrimSpace(string(b))); err == nil {
				out = append(out, t)
			}
		}
	}
	return out
}

// noteRequest records the blob a request names before it is served: a blob read by
// a caller who may push (it is about to name the blob in a manifest), or the digest
// an upload completes or a mount links. Readers who may only pull are not recorded,
// so that they cannot fill the record.
func (r *Registry) noteRequest(req *http.Request, rt route, c caller) {
	switch rt.kind {
	case routeBlob:
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			return
		}
		if r.cfg.Auth != nil && !c.permits(rt.name, "push", false) {
			return
		}
		if d, err := digest.Parse(rt.ref); err == nil {
			r.note(req.Context(), rt.name, d)
		}
	case routeUpload:
		q := req.URL.Query()
		for _, k := range []string{"digest", "mount"} {
			if d, err := digest.Parse(q.Get(k)); err == nil {
				r.note(req.Context(), rt.name, d)
			}
		}
	}
}

// noteManifest records what a manifest being pushed names, and the manifest itself,
// before distribution checks that its blobs exist.
func (r *Registry) noteManifest(ctx context.Context, repo string, ref digest.Digest, body []byte) {
	ds := append(manifestReferences(body), digest.FromBytes(body))
	if ref != "" {
		ds = append(ds, ref)
	}
	r.note(ctx, repo, ds...)
}

// manifestReferences lists the digests a manifest's JSON names as content it needs:
// config, layers, an index's manifests, an artifact's blobs (and a schema 1
// manifest's fsLayers). The subject is not content a referrer needs.
func manifestReferences(body []byte) []digest.Digest {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
		Blobs     []desc `json:"blobs"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []digest.Digest
	if m.Config != nil {
		out = append(out, m.Config.Digest)
	}
	for _, l := range [][]desc{m.Layers, m.Manifests, m.Blobs} {
		for _, d := range l {
			out = append(out, d.Digest)
		}
	}
	for _, l := range m.FSLayers {
		out = append(out, l.BlobSum)
	}
	return slices.DeleteFunc(out, func(d digest.Digest) bool { return d.Validate() != nil })
}

// manifestChildren lists the manifests an index names.
func manifestChildren(body []byte) []digest.Digest {
	var m struct {
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []digest.Digest
	for _, c := range m.Manifests {
		if c.Digest.Validate() == nil {
			out = append(out, c.Digest)
		}
	}
	return out
}

// GC marks every blob a stored manifest references and removes the others the
// grace rule lets go, with their repository links; then the referrers index entries
// of deleted manifests and stale parts written aside. It waits for a running scrub
// (which would take a blob removed under it for a missing one). The report says what
// was removed; an error means GC stopped early, and the report says how far it got.
func (r *Registry) GC(ctx context.Context, opts GCOptions) (*GCReport, error) {
	if !r.gc.running.CompareAndSwap(false, true) {
		return nil, ErrGCRunning
	}
	defer r.gc.running.Store(false)
	return r.runGC(ctx, opts)
}

func (r *Registry) runGC(ctx context.Context, opts GCOptions) (*GCReport, error) {
	g := r.gc
	select {
	case r.scrub.running <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("gc: waiting for a scrub to end: %w", ctx.Err())
	}
	defer func() { <-r.scrub.running }()

	rep := &GCReport{Started: g.cfg.Now().UTC(), DryRun: opts.DryRun, Why: opts.Why}
	w := &gcWalk{r: r, rep: rep, dry: opts.DryRun}
	err := w.run(ctx)
	rep.Finished = g.cfg.Now().UTC()
	if err != nil {
		rep.Error = err.Error()
	}
	r.recordGC(rep)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	return rep, nil
}

// recordGC keeps the report, counts it and logs it.
func (r *Registry) recordGC(rep *GCReport) {
	g := r.gc
	g.reportMu.Lock()
	g.last = rep
	if !rep.DryRun {
		g.lastRun = rep
	}
	g.reportMu.Unlock()
	result := "ok"
	if rep.Error != "" {
		result = "failed"
	}
	g.metrics.runs.WithLabelValues(result, fmt.Sprint(rep.DryRun)).Inc()
	if !rep.DryRun {
		g.metrics.bytes.Add(float64(rep.Reclaimed()))
		g.metrics.blobs.Add(float64(rep.Blobs))
		if rep.Error == "" {
			g.metrics.lastRun.Set(float64(rep.Finished.Unix()))
		}
	}
	msg, level := "garbage collected", r.cfg.Logger.Info
	if rep.DryRun {
		msg = "garbage collection dry run: nothing removed"
	}
	if rep.Error != "" {
		msg, level = "garbage collection stopped early", r.cfg.Logger.Error
	}
	args := []any{"why", rep.Why, "blobs", rep.Blobs, "bytes", rep.Bytes, "layer_links", rep.LayerLinks,
		"referrer_entries", rep.ReferrerEntries, "parts", rep.Parts, "part_bytes", rep.PartBytes,
		"recent_blobs_kept", rep.Recent, "referenced_blobs", rep.Referenced, "manifests", rep.Manifests,
		"repositories", rep.Repositories, "took", rep.Finished.Sub(rep.Started).Round(time.Millisecond)}
	if rep.Error != "" {
		args = append(args, "err", rep.Error)
	}
	level(msg, args...)
	for _, w := range rep.Warnings {
		r.cfg.Logger.Warn("garbage collection: " + w)
	}
}

// LastGC returns the last GC's report (dry runs included) and the last that was not
// a dry run; nil when there was none since the process started.
func (r *Registry) LastGC() (last, lastRun *GCReport) {
	r.gc.reportMu.Lock()
	defer r.gc.reportMu.Unlock()
	return r.gc.last, r.gc.lastRun
}

// NextGC is when the schedule runs GC next; zero without a schedule.
func (r *Registry) NextGC() time.Time {
	if t := r.gc.next.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// RunGCSchedule runs GC each time the configured schedule fires, until ctx ends.
// The clock is read every Tick, so a clock that jumps (a suspended machine, a test's
// clock) runs a GC that fell due at once rather than after the old wait. A schedule
// time that passes while the node is down is not caught up: the next one runs.
func (r *Registry) RunGCSchedule(ctx context.Context) {
	g := r.gc
	next := g.cfg.Schedule.Next(g.cfg.Now())
	if next.IsZero() {
		return
	}
	g.next.Store(&next)
	t := time.NewTicker(g.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := g.cfg.Now()
		if now.Before(next) {
			continue
		}
		// A failed run has logged itself (recordGC).
		if _, err := r.GC(ctx, GCOptions{Why: "scheduled"}); errors.Is(err, ErrGCRunning) {
			r.cfg.Logger.Info("scheduled garbage collection skipped: " + err.Error())
		}
		next = g.cfg.Schedule.Next(g.cfg.Now())
		g.next.Store(&next)
	}
}

// GCAnswer is what POST and GET /outpost/v1/gc answer.
type GCAnswer struct {
	Report *GCReport `json:"report"`
	// Error is why the GC asked for failed (the report, if any, says how far it got).
	Error string `json:"error,omitempty"`
	// Next is when the schedule runs GC next; zero without a schedule.
	Next time.Time `json:"next,omitzero"`
}

// gcKeepAlive is how often a GC answer still being worked on sends a blank line,
// so that the connection's stall deadline does not cut a long GC off.
const gcKeepAlive = 20 * time.Second

// GCHandler serves POST /outpost/v1/gc[?dry-run=true] (GC now; the answer is the
// report, preceded by blank lines while it runs) and GET (the last report). A GC
// asked for while another runs is a 409.
func (r *Registry) GCHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch req.Method {
		case http.MethodGet:
			last, _ := r.LastGC()
			_ = json.NewEncoder(w).Encode(GCAnswer{Report: last, Next: r.NextGC()})
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "GET, POST")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_ = json.NewEncoder(w).Encode(GCAnswer{Error: "GET (the last garbage collection) or POST (collect now)"})
			return
		}
		var opts GCOptions
		opts.Why = "asked"
		for k, v := range req.URL.Query() {
			switch {
			case k == "dry-run" && len(v) == 1 && (v[0] == "true" || v[0] == "false"):
				opts.DryRun = v[0] == "true"
			default:
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(GCAnswer{Error: fmt.Sprintf("query %s=%q: only dry-run=true or dry-run=false is accepted", k, strings.Join(v, ","))})
				return
			}
		}
		if !r.gc.running.CompareAndSwap(false, true) {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(GCAnswer{Error: ErrGCRunning.Error() + " at node " + r.cfg.Node + ": wait for it (outpost gc --last shows its report)"})
			return
		}
		type result struct {
			rep *GCReport
			err error
		}
		done := make(chan result, 1)
		go func() {
			defer r.gc.running.Store(false)
			rep, err := r.runGC(req.Context(), opts)
			done <- result{rep, err}
		}()
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		tick := time.NewTicker(gcKeepAlive)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				_, _ = io.WriteString(w, "\n")
				_ = rc.Flush()
				continue
			case res := <-done:
				ans := GCAnswer{Report: res.rep, Next: r.NextGC()}
				if res.err != nil {
					ans.Error = res.err.Error()
				}
				_ = json.NewEncoder(w).Encode(ans)
			}
			return
		}
	})
}
