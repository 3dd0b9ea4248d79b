// Package pipeline moves content along the tree: it routes the node's events into
// per-neighbour outboxes, drains them with the copy engine inside sync windows, and
// reconciles whole scopes when events may have been lost.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/outpost-edge/outpost/events"
)

// Endpoint is a registry the copy engine reads from or writes to.
type Endpoint struct {
	// Host is the registry's host:port.
	Host string
	// Secure uses https; otherwise http.
	Secure bool
	// User and Password authenticate with basic auth; empty is anonymous.
	User, Password string
	// Header goes with every request (where a replicated change comes from).
	Header http.Header
	// Transport is the base transport; default http.DefaultTransport.
	Transport http.RoundTripper
	// Blobs, when set, is the destination's own storage, written in process: the
	// node's own registry, for its replication writer. Blobs then skip the upload
	// API and the manifest goes alone.
	Blobs LocalBlobs
}

func (e Endpoint) repo(repo string) (name.Repository, error) {
	var opts []name.Option
	if !e.Secure {
		opts = append(opts, name.Insecure)
	}
	return name.NewRepository(e.Host+"/"+repo, opts...)
}

func (e Endpoint) scheme() string {
	if e.Secure {
		return "https"
	}
	return "http"
}

func (e Endpoint) transport() http.RoundTripper {
	base := e.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return headerTransport{base: base, header: e.Header}
}

func (e Endpoint) options(ctx context.Context) []remote.Option {
	auth := authn.Anonymous
	if e.User != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: e.User, Password: e.Password})
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(e.transport())}
}

type headerTransport struct {
	base   http.RoundTripper
	header http.Header
}

// RoundTrip adds the endpoint's headers and the origin the context carries.
func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	origin, _ := r.Context().Value(originKey{}).(string)
	if len(t.header) == 0 && origin == "" {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	for k, v := range t.header {
		r.Header[k] = v
	}
	if origin != "" {
		r.Header.Set(events.HeaderOrigin, origin)
	}
	return t.base.RoundTrip(r)
}

// errHeld says a downstream copy left a tag as it is here: a write made here that
// the upstream copy has not offered to the parent yet (see Ledger.Hold). The
// message comes back later; by then the parent has ordered the write, or the hold
// has ended.
var errHeld = errors.New("held: a write here is not yet offered to the parent")

// Copier applies events from a source registry to a destination. It applies the
// source's current state, not the event's payload, so applying an event twice, late
// or out of order converges all the same.
type Copier struct {
	src, dst Endpoint
	srcPull  *remote.Puller
	dstPull  *remote.Puller
	// pushMu guards dstPush, which is replaced when what it remembers is stale (see
	// write); newPusher makes the next one.
	pushMu    sync.Mutex
	dstPush   *remote.Pusher
	newPusher func() (*remote.Pusher, error)
	// locks, shared by a link's copiers, serializes the copies of one tag.
	locks *refLocks
	// watch, when set, is the ledger of writes at risk (see Ledger); up says this
	// copier writes to the parent.
	watch *Ledger
	up    bool
}

// NewCopier builds a copier; its clients are reused across copies.
func NewCopier(ctx context.Context, src, dst Endpoint) (*Copier, error) {
	srcPull, err := remote.NewPuller(src.options(ctx)...)
	if err != nil {
		return nil, err
	}
	dstPull, err := remote.NewPuller(dst.options(ctx)...)
	if err != nil {
		return nil, err
	}
	newPusher := func() (*remote.Pusher, error) { return remote.NewPusher(dst.options(ctx)...) }
	dstPush, err := newPusher()
	if err != nil {
		return nil, err
	}
	return &Copier{src: src, dst: dst, srcPull: srcPull, dstPull: dstPull, dstPush: dstPush, newPusher: newPusher}, nil
}

// maxReferrerDepth bounds signatures of signatures of ...
const maxReferrerDepth = 4

// Apply brings the destination to the source's current state for what e names.
func (c *Copier) Apply(ctx context.Context, e *events.Event) error {
	switch e.Action {
	case events.ActionPush, events.ActionTagDelete:
		if e.Tag != "" {
			return c.SyncTag(ctx, e.Repository, e.Tag)
		}
		return c.CopyDigest(ctx, e.Repository, e.Digest)
	case events.ActionManifestDelete:
		return c.syncDeletedDigest(ctx, e.Repository, e.Digest)
	case events.ActionRepositoryDelete:
		return c.syncDeletedRepository(ctx, e.Repository)
	}
	return fmt.Errorf("apply %s: unknown action %q", e.ID, e.Action)
}

// SyncTag makes the destination's tag what the source's is: copied if the source has
// it, deleted if not. Referrers travel by their own events; see SyncTagDeep.
func (c *Copier) SyncTag(ctx context.Context, repo, tag string) error {
	return c.syncTag(ctx, repo, tag, false)
}

// SyncTagDeep is SyncTag that also copies the referrers (signatures, SBOMs) of what
// the tag points at, for reconcile, where their events may be lost.
func (c *Copier) SyncTagDeep(ctx context.Context, repo, tag string) error {
	return c.syncTag(ctx, repo, tag, true)
}

func (c *Copier) syncTag(ctx context.Context, repo, tag string, deep bool) (err error) {
	srcRepo, dstRepo, err := c.repos(repo)
	if err != nil {
		return err
	}
	src, dst := srcRepo.Tag(tag), dstRepo.Tag(tag)
	defer c.locks.tag(repo, tag)()
	if c.up {
		defer func() {
			if err != nil && ctx.Err() == nil {
				c.watch.Failed(repo, tag) // held no longer after a few (see Ledger.Hold)
			}
		}()
	}
	head, err := c.srcPull.Head(ctx, src)
	if isNotFound(err) {
		if held, err := c.hold(ctx, repo, tag, dst); held || err != nil {
			if held {
				return errHeld
			}
			return err
		}
		err := c.pusher().Delete(ctx, dst)
		if isNotFound(err) {
			c.watch.Confirm(repo, tag, "")
			return nil
		}
		if err == nil && c.up {
			c.watch.Offered(repo, tag, "")
		}
		return wrap("delete tag", dst, err)
	}
	if err != nil {
		return wrap("resolve", src, err)
	}
	// Already there is the common case for an event applied twice or late, and for
	// the parent confirming a write it took from here: HEADs only, no manifest
	// crosses the link.
	cur, err := c.dstPull.Head(ctx, dst)
	switch {
	case err == nil && cur.Digest == head.Digest:
		c.watch.Confirm(repo, tag, head.Digest.String())
	default:
		current := ""
		if err == nil {
			current = cur.Digest.String()
		}
		if !c.up && c.watch.Hold(ctx, repo, tag, current) {
			return errHeld
		}
		desc, err := c.srcPull.Get(ctx, srcRepo.Digest(head.Digest.String()))
		if err != nil {
			return wrap("read", src, err)
		}
		if err := c.write(ctx, dst, desc); err != nil {
			return err
		}
		if c.up {
			c.watch.Offered(repo, tag, head.Digest.String())
		}
	}
	if !deep {
		return nil
	}
	return c.copyReferrers(ctx, repo, srcRepo.Digest(head.Digest.String()), head.Digest, 0)
}

// SyncReferrers copies the referrers (signatures, SBOMs) of what the tag points at
// in the source that the destination lacks.
func (c *Copier) SyncReferrers(ctx context.Context, repo, tag string) error {
	srcRepo, _, err := c.repos(repo)
	if err != nil {
		return err
	}
	head, err := c.srcPull.Head(ctx, srcRepo.Tag(tag))
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap("resolve", srcRepo.Tag(tag), err)
	}
	return c.copyReferrers(ctx, repo, srcRepo.Digest(head.Digest.String()), head.Digest, 0)
}

// CopyDigest copies a manifest and everything under it, if the source still has it.
func (c *Copier) CopyDigest(ctx context.Context, repo, digest string) error {
	h, err := v1.NewHash(digest)
	if err != nil {
		return fmt.Errorf("copy %s@%s: %w", repo, digest, err)
	}
	return c.copyManifest(ctx, repo, h, -1)
}

// copyManifest copies a manifest by digest: its blobs (streamed, verified, only the
// missing ones), an index's children, the manifest, then, from depth 0 on, its
// referrers (depth -1: none).
func (c *Copier) copyManifest(ctx context.Context, repo string, d v1.Hash, depth int) error {
	srcRepo, dstRepo, err := c.repos(repo)
	if err != nil {
		return err
	}
	src, dst := srcRepo.Digest(d.String()), dstRepo.Digest(d.String())
	if _, err := c.dstPull.Head(ctx, dst); err != nil {
		if !isNotFound(err) {
			return wrap("check", dst, err)
		}
		desc, err := c.srcPull.Get(ctx, src)
		if isNotFound(err) {
			return nil // gone at the source: its delete event follows
		}
		if err != nil {
			return wrap("read", src, err)
		}
		if err := c.write(ctx, dst, desc); err != nil {
			return err
		}
	}
	if depth < 0 || depth >= maxReferrerDepth {
		return nil
	}
	return c.copyReferrers(ctx, repo, src, d, depth)
}

// write pushes a manifest to ref (a tag or a digest) after its blobs and, for an
// index, its children: the destination skips what it has, so only the missing bytes
// travel, streamed and verified.
//
// A remote.Pusher remembers, for its whole life, each blob it found or put in a
// repository and never asks again; a repository delete at the destination since
// makes that wrong, and every later manifest naming such a blob (the config all
// artifacts of one type share, say) was refused with MANIFEST_BLOB_UNKNOWN for as
// long as the process lived. Then the pusher is replaced and the write tried again.
func (c *Copier) write(ctx context.Context, ref name.Reference, desc *remote.Descriptor) error {
	p := c.pusher()
	err := c.writeWith(ctx, p, ref, desc)
	var terr *transport.Error
	if !errors.As(err, &terr) || !slices.ContainsFunc(terr.Errors, func(d transport.Diagnostic) bool {
		return d.Code == transport.ManifestBlobUnknownErrorCode
	}) {
		return err
	}
	c.pushMu.Lock()
	if c.dstPush == p { // not replaced by another write already
		fresh, nerr := c.newPusher()
		if nerr != nil {
			c.pushMu.Unlock()
			return errors.Join(err, nerr)
		}
		c.dstPush = fresh
	}
	c.pushMu.Unlock()
	return c.writeWith(ctx, c.pusher(), ref, desc)
}

func (c *Copier) pusher() *remote.Pusher {
	c.pushMu.Lock()
	defer c.pushMu.Unlock()
	return c.dstPush
}

func (c *Copier) writeWith(ctx context.Context, push *remote.Pusher, ref name.Reference, desc *remote.Descriptor) error {
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return wrap("read index", ref, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return wrap("read index", ref, err)
		}
		if c.dst.Blobs != nil && onlyImagesAndIndexes(m) {
			if err := c.writeChildren(ctx, ref.Context().RepositoryStr(), m); err != nil {
				return wrap("write index", ref, err)
			}
			return wrap("write index", ref, push.Put(ctx, ref, desc))
		}
		return wrap("write index", ref, push.Push(ctx, ref, idx))
	case desc.MediaType.IsImage() || isOCIManifestLike(desc):
		img, err := desc.Image()
		if err != nil {
			return wrap("read image", ref, err)
		}
		if c.dst.Blobs != nil {
			if err := c.writeBlobsLocally(ctx, ref.Context().RepositoryStr(), img); err != nil {
				return wrap("write image", ref, err)
			}
			return wrap("write image", ref, push.Put(ctx, ref, desc))
		}
		if err := c.copyLargeLayers(ctx, ref.Context().RepositoryStr(), img); err != nil {
			return wrap("write image", ref, err)
		}
		return wrap("write image", ref, push.Push(ctx, ref, img))
	}
	return fmt.Errorf("copy %s: media type %s is not an image or index", ref, desc.MediaType)
}

// writeChildren writes the manifests an index lists that the destination lacks, each
// the way write does, before the index itself goes.
func (c *Copier) writeChildren(ctx context.Context, repo string, m *v1.IndexManifest) error {
	for _, child := range m.Manifests {
		if err := c.copyManifest(ctx, repo, child.Digest, -1); err != nil {
			return err
		}
	}
	return nil
}

// onlyImagesAndIndexes says whether write knows every child of an index; other
// children (go-containerregistry pushes them as plain blobs) leave the whole index
// to go-containerregistry.
func onlyImagesAndIndexes(m *v1.IndexManifest) bool {
	for _, child := range m.Manifests {
		if !child.MediaType.IsIndex() && !child.MediaType.IsImage() {
			return false
		}
	}
	return true
}

// isOCIManifestLike accepts manifests without a mediaType field that still carry a
// config and layers (some artifact tools omit it).
func isOCIManifestLike(desc *remote.Descriptor) bool { return desc.MediaType == "" }

func (c *Copier) copyReferrers(ctx context.Context, repo string, src name.Digest, subject v1.Hash, depth int) error {
	idx, err := remote.Referrers(src, append(c.src.options(ctx), remote.Reuse(c.srcPull))...)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return wrap("list referrers of", src, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return wrap("list referrers of", src, err)
	}
	for _, r := range m.Manifests {
		if r.Digest == subject {
			continue
		}
		if err := c.copyManifest(ctx, repo, r.Digest, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (c *Copier) syncDeletedDigest(ctx context.Context, repo, digest string) error {
	srcRepo, dstRepo, err := c.repos(repo)
	if err != nil {
		return err
	}
	if _, err := c.srcPull.Head(ctx, srcRepo.Digest(digest)); err == nil {
		return nil // it came back at the source
	} else if !isNotFound(err) {
		return wrap("check", srcRepo.Digest(digest), err)
	}
	err = c.pusher().Delete(ctx, dstRepo.Digest(digest))
	if isNotFound(err) {
		return nil
	}
	return wrap("delete", dstRepo.Digest(digest), err)
}

// hold says whether a downstream copy must leave the tag at dst as it is: a write
// made here that the parent has not been offered yet (see Ledger.Hold).
func (c *Copier) hold(ctx context.Context, repo, tag string, dst name.Tag) (bool, error) {
	if c.up || c.watch == nil {
		return false, nil
	}
	current := ""
	cur, err := c.dstPull.Head(ctx, dst)
	switch {
	case err == nil:
		current = cur.Digest.String()
	case !isNotFound(err):
		return false, wrap("check", dst, err)
	}
	return c.watch.Hold(ctx, repo, tag, current), nil
}

// syncDeletedRepository deletes the repository at the destination if the source
// has no tags in it; if it was pushed to again since, each tag there is made what
// it is at the source instead (those only the destination has are deleted): a
// repository left alone would keep tags the source no longer has, for good.
func (c *Copier) syncDeletedRepository(ctx context.Context, repo string) error {
	srcRepo, dstRepo, err := c.repos(repo)
	if err != nil {
		return err
	}
	unlock := c.locks.repository(repo)
	tags, err := c.srcPull.List(ctx, srcRepo)
	if err != nil && !isNotFound(err) {
		unlock()
		return fmt.Errorf("list %s: %w", srcRepo, err)
	}
	if len(tags) > 0 {
		unlock()
		return c.syncRepositoryTags(ctx, repo, dstRepo, tags)
	}
	defer unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete,
		c.dst.scheme()+"://"+c.dst.Host+"/outpost/v1/repositories/"+repo, nil)
	if err != nil {
		return err
	}
	if c.dst.User != "" {
		req.SetBasicAuth(c.dst.User, c.dst.Password)
	}
	resp, err := c.dst.transport().RoundTrip(req)
	if err != nil {
		return fmt.Errorf("delete repository %s at %s: %w", repo, c.dst.Host, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("delete repository %s at %s: %s", repo, c.dst.Host, resp.Status)
	}
	return nil
}

// syncRepositoryTags makes every tag of the repository at the destination what
// it is at the source, which has srcTags.
func (c *Copier) syncRepositoryTags(ctx context.Context, repo string, dstRepo name.Repository, srcTags []string) error {
	dstTags, err := c.dstPull.List(ctx, dstRepo)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("list %s: %w", dstRepo, err)
	}
	held := false
	for _, tag := range slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(srcTags), dstTags...)))) {
		err := c.syncTag(ctx, repo, tag, true)
		if errors.Is(err, errHeld) {
			held = true
			continue
		}
		if err == nil {
			err = c.dropReferrersGone(ctx, repo, dstRepo.Tag(tag))
		}
		if err != nil {
			return err
		}
	}
	if held {
		return errHeld
	}
	return nil
}

// dropReferrersGone deletes at the destination the referrers of what tag names there
// that the source does not hold: the repository was deleted at the source with them,
// and pushed to again. Without it the destination kept referrers no event would
// ever bring back to the source, and the two stayed apart.
func (c *Copier) dropReferrersGone(ctx context.Context, repo string, tag name.Tag) error {
	desc, err := c.dstPull.Head(ctx, tag)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap("resolve", tag, err)
	}
	subject := tag.Context().Digest(desc.Digest.String())
	idx, err := remote.Referrers(subject, append(c.dst.options(ctx), remote.Reuse(c.dstPull))...)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap("list referrers of", subject, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return wrap("list referrers of", subject, err)
	}
	for _, r := range m.Manifests {
		if err := c.syncDeletedDigest(ctx, repo, r.Digest.String()); err != nil { // only if the source lacks it
			return err
		}
	}
	return nil
}

func (c *Copier) repos(repo string) (src, dst name.Repository, err error) {
	if src, err = c.src.repo(repo); err != nil {
		return src, dst, fmt.Errorf("repository %q: %w", repo, err)
	}
	if dst, err = c.dst.repo(repo); err != nil {
		return src, dst, fmt.Errorf("repository %q: %w", repo, err)
	}
	return src, dst, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

func wrap(op string, ref name.Reference, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", op, ref, err)
}
