package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/events"
	"github.com/outpost-edge/outpost/pipeline"
)

// Pending content: what the messages in an outbox will move. A message names a
// manifest, never a blob, and is a few hundred bytes; the content behind it can
// be gigabytes, and much of it may already be at the other side. The estimate:
// peek at the queued events (at most peekMax), read each pushed manifest from
// the node's own registry (an index's children too), take the union of their
// blobs (a blob shared by several moves once), and leave out those the
// destination is known to have. Manifests are cached by digest (immutable);
// what the destination has is asked once per blob (a HEAD), kept while true,
// and asked again after hasRecheck while false.

const (
	peekMax    = 1000
	hasRecheck = 30 * time.Second
	cacheMax   = 100_000
)

// blobChecker says whether a destination holds a blob; nil: unknown, count it.
type blobChecker func(ctx context.Context, repo, digest string) (bool, error)

type contentEstimator struct {
	source endpointGetter
	mu     sync.Mutex
	blobs  map[string][]blobSize // manifest digest -> the blobs it needs (children's included)
	has    map[string]hasEntry   // destination key + blob digest
	last   map[string]lastEstimate
	reuse  time.Duration // estimateReuse; tests set 0
}

// lastEstimate is an outbox's last answer: reused while the outbox holds the
// same sequences, for estimateReuse (status is asked every few seconds, and a
// closed window can hold thousands of messages).
type lastEstimate struct {
	p  events.Pending
	at time.Time
}

const estimateReuse = 10 * time.Second

type blobSize struct {
	digest string
	size   int64
}

type hasEntry struct {
	has bool
	at  time.Time
}

// endpointGetter reads a manifest from the node's own registry.
type endpointGetter func(ctx context.Context, repo, digest string) ([]byte, error)

func newContentEstimator(get endpointGetter) *contentEstimator {
	return &contentEstimator{source: get, blobs: map[string][]blobSize{}, has: map[string]hasEntry{}, last: map[string]lastEstimate{}, reuse: estimateReuse}
}

// estimate reads an outbox's pending messages and the content they will move
// to a destination (destKey names it in the cache).
func (c *contentEstimator) estimate(ctx context.Context, ob *events.Outbox, destKey string, has blobChecker) (events.Pending, error) {
	p, err := ob.Pending(ctx)
	if err != nil {
		return p, err
	}
	p.Bytes = 0
	if p.Messages == 0 {
		return p, nil
	}
	key := ob.Name() + " " + destKey
	c.mu.Lock()
	l, ok := c.last[key]
	c.mu.Unlock()
	if ok && time.Since(l.at) < c.reuse && l.p.FirstSeq == p.FirstSeq && l.p.LastSeq == p.LastSeq && l.p.Messages == p.Messages {
		return l.p, nil
	}
	evs, err := ob.Peek(ctx, peekMax)
	if err != nil && len(evs) == 0 {
		return p, err
	}
	seen := map[string]bool{}
	var total uint64
	// Asking the destination is bounded: past it, what is cached counts.
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, e := range evs {
		if e.Action != events.ActionPush || e.Digest == "" {
			continue
		}
		blobs, err := c.manifestBlobs(ctx, e.Repository, e.Digest, 0)
		if err != nil {
			continue // deleted since: the copy will apply the delete
		}
		for _, b := range blobs {
			if seen[b.digest] {
				continue
			}
			seen[b.digest] = true
			if has != nil && c.destHas(hctx, destKey, e.Repository, b.digest, has) {
				continue
			}
			total += uint64(b.size)
		}
	}
	if n := uint64(len(evs)); n > 0 && p.Messages > n {
		total = total * p.Messages / n // past what was peeked: scaled
	}
	p.Bytes = total
	c.mu.Lock()
	if len(c.last) > cacheMax {
		clear(c.last)
	}
	c.last[key] = lastEstimate{p: p, at: time.Now()}
	c.mu.Unlock()
	return p, nil
}

func (c *contentEstimator) destHas(ctx context.Context, destKey, repo, digest string, has blobChecker) bool {
	key := destKey + " " + digest
	c.mu.Lock()
	e, ok := c.has[key]
	c.mu.Unlock()
	if ok && (e.has || time.Since(e.at) < hasRecheck) {
		return e.has
	}
	if ctx.Err() != nil {
		return e.has
	}
	ok, err := has(ctx, repo, digest)
	if err != nil {
		return e.has // unreachable: what was known, or count it
	}
	c.mu.Lock()
	if len(c.has) > cacheMax {
		clear(c.has)
	}
	c.has[key] = hasEntry{has: ok, at: time.Now()}
	c.mu.Unlock()
	return ok
}

// manifest is the part of any manifest or index the estimate reads.
type manifest struct {
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Blobs     []descriptor `json:"blobs"`
	Manifests []descriptor `json:"manifests"`
}

type descriptor struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func (c *contentEstimator) manifestBlobs(ctx context.Context, repo, digest string, depth int) ([]blobSize, error) {
	c.mu.Lock()
	b, ok := c.blobs[digest]
	c.mu.Unlock()
	if ok {
		return b, nil
	}
	if depth > 2 {
		return nil, fmt.Errorf("manifest %s: nested too deep", digest)
	}
	raw, err := c.source(ctx, repo, digest)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	var out []blobSize
	if m.Config != nil && m.Config.Digest != "" {
		out = append(out, blobSize{m.Config.Digest, m.Config.Size})
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		out = append(out, blobSize{l.Digest, l.Size})
	}
	for _, child := range m.Manifests {
		cb, err := c.manifestBlobs(ctx, repo, child.Digest, depth+1)
		if err == nil {
			out = append(out, cb...)
		}
	}
	c.mu.Lock()
	if len(c.blobs) > cacheMax {
		clear(c.blobs)
	}
	c.blobs[digest] = out
	c.mu.Unlock()
	return out, nil
}

// manifestAccept is every manifest type a node stores.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// ownTags lists a repository's tags at this node's registry.
func (n *Node) ownTags(ctx context.Context, repo string) ([]string, error) {
	raw, err := n.ownGet(ctx, "/v2/"+repo+"/tags/list", "application/json")
	if err != nil {
		return nil, err
	}
	var tl struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(raw, &tl); err != nil {
		return nil, fmt.Errorf("tags of %s: %w", repo, err)
	}
	return tl.Tags, nil
}

// ownManifest reads a manifest from this node's registry as its replication user.
func (n *Node) ownManifest(ctx context.Context, repo, digest string) ([]byte, error) {
	return n.ownGet(ctx, "/v2/"+repo+"/manifests/"+url.PathEscape(digest), manifestAccept)
}

func (n *Node) ownGet(ctx context.Context, path, accept string) ([]byte, error) {
	scheme := "http"
	if n.tls != nil {
		scheme = "https"
	}
	u := scheme + "://" + loopback(n.httpLn.Addr().String()) + path
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(events.ReplicaUser, n.internalPw)
	req.Header.Set("Accept", accept)
	resp, err := httpClient(n.selfRT).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 4<<20))
}

// parentHasBlob asks the parent's registry, with the sync token, for a blob.
func (n *Node) parentHasBlob(ctx context.Context, repo, digest string) (bool, error) {
	scheme := n.cs.ParentProtocol
	if scheme == "" {
		scheme = "http"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, scheme+"://"+n.cs.RegistryEndpoints()[0]+"/v2/"+repo+"/blobs/"+url.PathEscape(digest), nil)
	if err != nil {
		return false, err
	}
	req.SetBasicAuth(n.cs.SyncTokenName, n.cs.SyncTokenPassword)
	req.Header.Set(events.HeaderInstance, n.instance)
	resp, err := httpClient(n.parentRT).Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("blob %s at parent: %s", digest, resp.Status)
}

func httpClient(t http.RoundTripper) *http.Client {
	if t == nil {
		t = http.DefaultTransport
	}
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// rateMeter turns the meter's byte counts into each direction's rate over the
// last minute.
type rateMeter struct {
	m       *pipeline.Meter
	mu      sync.Mutex
	samples []rateSample
}

type rateSample struct {
	at       time.Time
	up, down uint64
}

const rateSpan = time.Minute

// rates samples the meter (at most once a second) and returns bytes per second
// up and down over the last minute.
func (r *rateMeter) rates(now time.Time) (up, down float64) {
	if r == nil || r.m == nil {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 || now.Sub(r.samples[len(r.samples)-1].at) >= time.Second {
		r.samples = append(r.samples, rateSample{at: now, up: r.m.Moved("upstream"), down: r.m.Moved("downstream")})
	}
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) > rateSpan {
		r.samples = r.samples[1:]
	}
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return float64(last.up-first.up) / dt, float64(last.down-first.down) / dt
}
