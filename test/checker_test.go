package test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-edge/outpost/test/content"
)

// The randomized convergence checker. `make test` runs a short version; `make soak`
// runs it as long as asked:
//
//	go test -run TestConvergeRandom ./test/ -v -converge.rounds=50
//	go test -run TestConvergeRandom ./test/ -v -converge.duration=30m -timeout 0
//	go test -run TestConvergeRandom ./test/ -v -converge.seed=1234   # replay a seed
//
// The environment can say the same: CONVERGE_SEED, SOAK_ROUNDS, SOAK_DURATION.
var (
	convergeSeed     = flag.Uint64("converge.seed", 0, "seed of the randomized convergence checker (0: a new one; env CONVERGE_SEED)")
	convergeRounds   = flag.Int("converge.rounds", 0, "rounds of the randomized convergence checker (default 3; env SOAK_ROUNDS)")
	convergeDuration = flag.Duration("converge.duration", 0, "run the randomized convergence checker this long, in rounds (env SOAK_DURATION)")
	// On by default: a repository delete and the writes to the same repository at a
	// node are ordered (registry/repolock.go); off replays seeds drawn before.
	convergeRepoDeletes = flag.Bool("converge.repository-deletes", true, "the checker also deletes whole repositories (env CONVERGE_REPOSITORY_DELETES=0: not)")
)

// checker ops and faults.
const (
	opPush       = "push"
	opMove       = "move-tag"
	opTagDelete  = "tag-delete"
	opDigestDel  = "manifest-delete"
	opReferrer   = "referrer"
	opRacingPair = "same-tag-at-two-sites"
	opRepoDelete = "repository-delete"
)

var checkerRepos = []string{"conv/app", "conv/lib"}

const (
	checkerTags      = 5  // tags per repository: small, so that ops collide
	checkerOpsRound  = 36 // operations per round
	checkerWorkers   = 6  // operations at once
	checkerRacing    = 3  // tags a same-tag-at-two-sites operation pushes at both sites at once
	checkerQuiescent = 60 * time.Second
)

type checker struct {
	t       *testing.T
	rng     *rand.Rand
	root    *Node
	writers []*Node // ReadWrite nodes clients write at
	nodes   []*Node // every node, root first
	links   []*Node // children whose links can be cut
	middle  *Node   // the ReadWrite child with a child: SIGKILLed once

	repoDeletes bool
	marks       []int // where each node's log stood when the round began

	down      sync.Map // *Node -> bool while killed
	opsMu     sync.Mutex
	ops       map[string]int // by kind, tried
	opsFailed map[string]int // by kind, refused or failed (a node down, a digest gone)
	faults    map[string]int
	lastErr   map[string]string
}

// TestConvergeRandom is the randomized convergence checker: a root with two
// ReadWrite children, a ReadWrite grandchild under one of them and a ReadOnly site;
// seeded rounds of random pushes, tag moves, tag, manifest and repository deletes
// and referrers at random ReadWrite nodes, some of them the same tag at two sites at
// once, with the children's links cut through fault proxies and the middle node
// SIGKILLed once. After each round, with no operator, every node's scope must
// equal the root's, by listing: tags, digests, referrers.
func TestConvergeRandom(t *testing.T) {
	seed := *convergeSeed
	if v := os.Getenv("CONVERGE_SEED"); seed == 0 && v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rounds := *convergeRounds
	if v := os.Getenv("SOAK_ROUNDS"); rounds == 0 && v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	duration := *convergeDuration
	if v := os.Getenv("SOAK_DURATION"); duration == 0 && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION=%q: %v", v, err)
		}
		duration = d
	}
	if rounds == 0 && duration == 0 {
		rounds = 3
	}
	t.Logf("seed %d (replay: -converge.seed=%d or CONVERGE_SEED=%d)", seed, seed, seed)

	c := &checker{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ops: map[string]int{}, opsFailed: map[string]int{}, faults: map[string]int{}, lastErr: map[string]string{}}
	c.repoDeletes = *convergeRepoDeletes && os.Getenv("CONVERGE_REPOSITORY_DELETES") != "0"
	scope := []string{"conv/*"}
	c.root = StartNode(t, NodeOptions{})
	a := StartChild(t, c.root, Child{Name: "sitea", Mode: "ReadWrite", Repositories: scope, ThroughProxy: true})
	b := StartChild(t, c.root, Child{Name: "siteb", Mode: "ReadWrite", Repositories: scope, ThroughProxy: true})
	g := StartChild(t, c.root, Child{Name: "sitebb", Parent: "siteb", Mode: "ReadWrite", Repositories: scope, ThroughProxy: true})
	ro := StartChild(t, c.root, Child{Name: "sitero", Parent: "sitea", Mode: "ReadOnly", Repositories: scope, ThroughProxy: true})
	c.writers = []*Node{c.root, a, b, g}
	c.nodes = []*Node{c.root, a, b, g, ro}
	c.links = []*Node{a, b, g, ro}
	c.middle = b
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d failed: replay with -converge.seed=%d", seed, seed)
		}
	})

	start := time.Now()
	killRound := (rounds + 1) / 2
	if rounds == 0 {
		killRound = -1 // by time: after half the duration
	}
	killed := false
	var divergent []string
	for round := 1; ; round++ {
		if rounds > 0 && round > rounds || rounds == 0 && round > 1 && time.Since(start) > duration {
			break
		}
		kill := !killed && (round == killRound || rounds == 0 && time.Since(start) > duration/2)
		killed = killed || kill
		c.round(round, kill)
		divergent = c.quiesce(round)
		t.Logf("round %d: so far %s; divergent tags %d", round, c.summary(), len(divergent))
		if len(divergent) > 0 {
			break
		}
	}
	if !killed && !t.Failed() {
		t.Errorf("the middle node was never killed (rounds %d, duration %s)", rounds, duration)
	}
	c.checkConflictsCounted()
	c.opsMu.Lock()
	for k, e := range c.lastErr {
		t.Logf("last failure of %s (a node down, or nothing to pick): %s", k, e)
	}
	c.opsMu.Unlock()
	t.Logf("seed %d, %s, divergent tags %d, in %s", seed, c.summary(), len(divergent), time.Since(start).Round(time.Second))
}

func (c *checker) summary() string {
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	return fmt.Sprintf("operations %s (failed %s), faults %s", kv(c.ops), kv(c.opsFailed), kv(c.faults))
}

func kv(m map[string]int) string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func (c *checker) count(m map[string]int, k string) {
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	m[k]++
}

// plannedOp is one operation drawn from the seed; run at the time it is taken.
type plannedOp struct {
	kind     string
	sites    []*Node
	repo     string
	tag      string
	pick     uint64 // which existing digest to use, as the node's listing has them
	subjTagN int
}

// round runs checkerOpsRound operations checkerWorkers at a time, cutting links as
// it goes, and SIGKILLs the middle node halfway when kill is set.
func (c *checker) round(round int, kill bool) {
	c.marks = make([]int, len(c.nodes))
	for i, n := range c.nodes {
		c.marks[i] = len(n.Output())
	}
	ops := make([]plannedOp, checkerOpsRound)
	for i := range ops {
		ops[i] = c.plan()
	}
	// Faults: the seed says which link, which side and how long.
	type fault struct {
		at     int // after this many operations were handed out
		node   *Node
		gw     bool
		downMs int
	}
	var faults []fault
	for range 3 {
		faults = append(faults, fault{at: c.rng.IntN(checkerOpsRound), node: c.links[c.rng.IntN(len(c.links))],
			gw: c.rng.IntN(2) == 0, downMs: []int{0, 300, 1500}[c.rng.IntN(3)]})
	}
	work := make(chan plannedOp)
	var wg sync.WaitGroup
	for range checkerWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for op := range work {
				c.run(op)
			}
		}()
	}
	var faultWG sync.WaitGroup
	for i, op := range ops {
		for _, f := range faults {
			if f.at != i {
				continue
			}
			p := f.node.RegistryProxy
			which := "registry"
			if f.gw {
				p, which = f.node.GatewayProxy, "gateway"
			}
			if f.downMs == 0 {
				p.Cut()
				c.count(c.faults, "cut-"+which)
				continue
			}
			p.SetDown(true)
			c.count(c.faults, "down-"+which)
			faultWG.Add(1)
			go func() {
				defer faultWG.Done()
				time.Sleep(time.Duration(f.downMs) * time.Millisecond)
				p.SetDown(false)
			}()
		}
		if kill && i == len(ops)/2 {
			c.killMiddle()
		}
		work <- op
	}
	close(work)
	wg.Wait()
	faultWG.Wait()
}

// killMiddle SIGKILLs the middle node while operations run, and starts it again.
func (c *checker) killMiddle() {
	c.down.Store(c.middle, true)
	c.middle.Kill()
	c.count(c.faults, "sigkill-"+c.middle.opts.Name)
	time.Sleep(500 * time.Millisecond)
	c.middle.Start()
	c.down.Delete(c.middle)
}

func (c *checker) plan() plannedOp {
	op := plannedOp{repo: checkerRepos[c.rng.IntN(len(checkerRepos))], tag: fmt.Sprintf("t%d", c.rng.IntN(checkerTags)),
		pick: c.rng.Uint64(), subjTagN: c.rng.IntN(checkerTags)}
	site := c.writers[c.rng.IntN(len(c.writers))]
	op.sites = []*Node{site}
	switch r := c.rng.IntN(100); {
	case r < 30:
		op.kind = opPush
	case r < 55:
		op.kind = opRacingPair
		other := c.writers[c.rng.IntN(len(c.writers))]
		for other == site {
			other = c.writers[c.rng.IntN(len(c.writers))]
		}
		op.sites = append(op.sites, other)
	case r < 70:
		op.kind = opMove
	case r < 80:
		op.kind = opTagDelete
	case r < 88:
		op.kind = opDigestDel
	case r < 95 || !c.repoDeletes:
		op.kind = opReferrer
	default:
		op.kind = opRepoDelete
	}
	return op
}

func (c *checker) run(op plannedOp) {
	c.count(c.ops, op.kind)
	var err error
	switch op.kind {
	case opPush:
		err = c.push(op.sites[0], op.repo, op.tag)
	case opRacingPair:
		// Both sites push the same few tags with different content at once.
		errs := make([]error, 2*checkerRacing)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for k := range checkerRacing {
			tag := fmt.Sprintf("t%d", (op.subjTagN+k)%checkerTags)
			for i, s := range op.sites {
				img := content.Image(c.t, 1)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[2*k+i] = c.write(s, op.repo+":"+tag, img)
				}()
			}
		}
		close(start)
		wg.Wait()
		err = errors.Join(errs...)
	case opMove:
		err = c.move(op)
	case opTagDelete:
		err = c.delete(op.sites[0], op.repo+":"+op.tag)
	case opDigestDel:
		var d string
		if d, err = c.existing(op.sites[0], op.repo, op.pick); err == nil {
			err = c.delete(op.sites[0], op.repo+"@"+d)
		}
	case opReferrer:
		err = c.referrer(op)
	case opRepoDelete:
		err = c.deleteRepository(op.sites[0], op.repo)
	}
	if err != nil {
		c.count(c.opsFailed, op.kind)
		c.opsMu.Lock()
		c.lastErr[op.kind] = err.Error()
		c.opsMu.Unlock()
	}
}

var errNothingToPick = errors.New("no tag to pick from")

func (c *checker) isDown(n *Node) bool {
	_, ok := c.down.Load(n)
	return ok
}

func (c *checker) ref(n *Node, s string) (name.Reference, error) {
	if c.isDown(n) {
		return nil, fmt.Errorf("%s is down", n.opts.Name)
	}
	return name.ParseReference(n.Host+"/"+s, name.Insecure)
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Second)
}

func (c *checker) push(n *Node, repo, tag string) error {
	return c.write(n, repo+":"+tag, content.Image(c.t, 1))
}

func (c *checker) write(n *Node, ref string, img v1.Image) error {
	r, err := c.ref(n, ref)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	return remote.Write(r, img, Auth, remote.WithContext(ctx))
}

func (c *checker) delete(n *Node, ref string) error {
	r, err := c.ref(n, ref)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	return remote.Delete(r, Auth, remote.WithContext(ctx))
}

// deleteRepository deletes a whole repository at n (Outpost's own endpoint).
func (c *checker) deleteRepository(n *Node, repo string) error {
	if c.isDown(n) {
		return fmt.Errorf("%s is down", n.opts.Name)
	}
	ctx, cancel := opCtx()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, n.URL+"/outpost/v1/repositories/"+repo, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(Authorize(req))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("delete repository %s at %s: %s", repo, n.opts.Name, resp.Status)
	}
	return nil
}

// existing picks one digest a tag of repo holds at n.
func (c *checker) existing(n *Node, repo string, pick uint64) (string, error) {
	if c.isDown(n) {
		return "", fmt.Errorf("%s is down", n.opts.Name)
	}
	tags, err := tagsAt(n, repo)
	if err != nil {
		return "", err
	}
	if len(tags) == 0 {
		return "", errNothingToPick
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range tags {
			if !yield(k) {
				return
			}
		}
	})
	return tags[keys[pick%uint64(len(keys))]], nil
}

// move points a tag at a digest another tag holds at the same node.
func (c *checker) move(op plannedOp) error {
	n := op.sites[0]
	d, err := c.existing(n, op.repo, op.pick)
	if err != nil {
		return err
	}
	src, err := c.ref(n, op.repo+"@"+d)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	desc, err := remote.Get(src, Auth, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	dst, err := c.ref(n, op.repo+":"+op.tag)
	if err != nil {
		return err
	}
	return remote.Put(dst, desc, Auth, remote.WithContext(ctx))
}

// referrer pushes an artifact whose subject is a digest a tag holds at the node.
func (c *checker) referrer(op plannedOp) error {
	n := op.sites[0]
	d, err := c.existing(n, op.repo, op.pick)
	if err != nil {
		return err
	}
	src, err := c.ref(n, op.repo+"@"+d)
	if err != nil {
		return err
	}
	ctx, cancel := opCtx()
	defer cancel()
	desc, err := remote.Head(src, Auth, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	art := content.Artifact(c.t, "application/vnd.outpost.test+json", desc)
	ad, err := art.Digest()
	if err != nil {
		return err
	}
	return c.write(n, op.repo+"@"+ad.String(), art)
}

// scopeView is what a node's listing says of the scope: "repo:tag" -> digest and
// the sorted digests of its referrers.
type scopeView map[string]string

// listScope lists the scope at n: its catalog, each repository's tags, the digest
// each tag resolves to and the referrers of that digest.
func listScope(n *Node) (scopeView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := name.NewRegistry(n.Host, name.Insecure)
	if err != nil {
		return nil, err
	}
	repos, err := remote.Catalog(ctx, reg, Auth)
	if err != nil {
		return nil, fmt.Errorf("catalog of %s: %w", n.opts.Name, err)
	}
	view := scopeView{}
	for _, repo := range repos {
		if !strings.HasPrefix(repo, "conv/") {
			continue
		}
		tags, err := tagsAt(n, repo)
		if err != nil {
			return nil, fmt.Errorf("tags of %s at %s: %w", repo, n.opts.Name, err)
		}
		for tag, d := range tags {
			dr, err := name.NewDigest(n.Host+"/"+repo+"@"+d, name.Insecure)
			if err != nil {
				return nil, err
			}
			idx, err := remote.Referrers(dr, Auth, remote.WithContext(ctx))
			if err != nil {
				return nil, fmt.Errorf("referrers of %s at %s: %w", dr, n.opts.Name, err)
			}
			m, err := idx.IndexManifest()
			if err != nil {
				return nil, err
			}
			var refs []string
			for _, r := range m.Manifests {
				refs = append(refs, short(r.Digest.String()))
			}
			slices.Sort(refs)
			view[repo+":"+tag] = short(d) + " referrers[" + strings.Join(refs, ",") + "]"
		}
	}
	return view, nil
}

// quiesce waits, bounded, until every node's scope equals the root's, and reports
// the tags that still differ if they never do.
func (c *checker) quiesce(round int) []string {
	c.t.Helper()
	var divergent []string
	var last error
	deadline := time.Now().Add(checkerQuiescent)
	start := time.Now()
	told := false
	marks := c.marks
	for {
		divergent, last = c.compare()
		if !told && time.Since(start) > 10*time.Second {
			told = true
			c.t.Logf("round %d: still %d divergent tags after 10s (listing error: %v):\n%s", round, len(divergent), last, strings.Join(divergent, "\n"))
			for i, n := range c.nodes {
				c.t.Logf("%s since the round began:\n%s", n.opts.Name, warnings(n.Output()[marks[i]:], 30))
			}
		}
		if last == nil && len(divergent) == 0 {
			c.t.Logf("round %d: every node's scope equals the root's after %s", round, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.opsMu.Lock()
	for k, e := range c.lastErr {
		c.t.Logf("last failure of %s: %s", k, e)
	}
	c.opsMu.Unlock()
	c.t.Errorf("round %d: after %s, %d divergent tags (listing error: %v):\n%s", round, checkerQuiescent,
		len(divergent), last, strings.Join(divergent, "\n"))
	c.logEvents(divergent)
	return divergent
}

// logEvents prints, for a failed round, the last events of each node in the
// repositories that differ: what each node applied, in its order.
func (c *checker) logEvents(divergent []string) {
	repos := map[string]bool{}
	for _, d := range divergent {
		if repo, _, ok := strings.Cut(strings.TrimSpace(d), ":"); ok {
			repos[repo] = true
		}
	}
	logRepositoryEvents(c.t, slices.Sorted(maps.Keys(repos)), c.nodes...)
}

// logRepositoryEvents logs the last events of each node's log that name one of
// repos, for a failure's reader.
func logRepositoryEvents(t *testing.T, repos []string, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		var lines []string
		for _, e := range eventLog(t, n) {
			if slices.Contains(repos, e.Repository) {
				lines = append(lines, fmt.Sprintf("%d %s %s:%s %s subject=%s origin=%s from=%s", e.Sequence, e.Action,
					e.Repository, e.Tag, short(e.Digest), short(e.Subject), e.Origin, e.From))
			}
		}
		t.Logf("events of %s in %v:\n%s", n.opts.Name, repos, strings.Join(lines[max(0, len(lines)-200):], "\n"))
	}
}

// compare lists every node's scope and returns the tags where one differs from
// the root's.
func (c *checker) compare() ([]string, error) {
	views := make([]scopeView, len(c.nodes))
	for i, n := range c.nodes {
		v, err := listScope(n)
		if err != nil {
			return nil, err
		}
		views[i] = v
	}
	keys := map[string]bool{}
	for _, v := range views {
		for k := range v {
			keys[k] = true
		}
	}
	var divergent []string
	for k := range keys {
		want := views[0][k]
		var wrong []string
		for i, v := range views[1:] {
			if v[k] != want {
				wrong = append(wrong, fmt.Sprintf("%s has %q", c.nodes[i+1].opts.Name, v[k]))
			}
		}
		if len(wrong) > 0 {
			divergent = append(divergent, fmt.Sprintf("  %s: root has %q, %s", k, want, strings.Join(wrong, ", ")))
		}
	}
	slices.Sort(divergent)
	return divergent, nil
}

// checkConflictsCounted prints how many overwritten writes the sites reported.
func (c *checker) checkConflictsCounted() {
	total := 0
	for _, n := range c.writers[1:] {
		total += len(conflictsLoggedAll(n))
	}
	c.t.Logf("overwritten writes reported by the sites: %d", total)
}

// conflictsLoggedAll counts every conflict line n logged (a restart keeps the
// harness's output).
func conflictsLoggedAll(n *Node) []string {
	var out []string
	for _, line := range strings.Split(n.Output(), "\n") {
		if strings.Contains(line, conflictLine) {
			out = append(out, line)
		}
	}
	return out
}

// warnings is up to most warning and error lines of a node's log, and what it
// said of reconciles and restarts.
func warnings(log string, most int) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) ||
			strings.Contains(line, "reconcil") || strings.Contains(line, "restart") || strings.Contains(line, `"msg":"activated"`) {
			out = append(out, line)
		}
	}
	return strings.Join(out[max(0, len(out)-most):], "\n")
}
