package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"golang.org/x/sync/errgroup"

	"github.com/google/go-containerregistry/pkg/name"
)

// ReconcileResult counts what a reconcile did.
type ReconcileResult struct {
	Repositories int // repositories compared
	Tags         int // tags compared
}

// Reconcile compares the link's scope on both sides and copies the difference: the
// safety net under events (first activation, resync, lost messages, a crash). Every
// tag the parent has is made the same here, with its referrers; a ReadWrite node
// then sends up the referrers it has of it. A tag only this node has is deleted
// here on a ReadOnly node (the parent deleted it); a ReadWrite node sends it up
// instead, as its own push may not have reached the parent yet.
func (l *Link) Reconcile(ctx context.Context, inScope func(repo string) bool, readWrite bool) (ReconcileResult, error) {
	var res ReconcileResult
	parentRepos, err := l.down.sourceCatalog(ctx)
	if err != nil {
		return res, err
	}
	localRepos, err := l.up.sourceCatalog(ctx)
	if err != nil {
		return res, err
	}
	repos := slices.Compact(slices.Sorted(slices.Values(append(parentRepos, localRepos...))))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyJobs)
	for _, repo := range repos {
		if !inScope(repo) {
			continue
		}
		res.Repositories++
		parentTags, err := l.down.sourceTags(ctx, repo)
		if err != nil {
			return res, err
		}
		localTags, err := l.up.sourceTags(ctx, repo)
		if err != nil {
			return res, err
		}
		for _, tag := range parentTags {
			res.Tags++
			c := l.down
			if readWrite && l.cfg.Ledger.Unsent(repo, tag) {
				c = l.up // a write here the parent was never offered (its event expired)
			}
			g.Go(func() error {
				err := c.SyncTagDeep(gctx, repo, tag)
				if errors.Is(err, errHeld) {
					return nil // the upstream copy offers it; the parent's answer comes down
				}
				if err != nil || !readWrite || c == l.up {
					return err
				}
				// Referrers made here whose events were lost (a crash) go up too.
				return l.up.SyncReferrers(gctx, repo, tag)
			})
		}
		for _, tag := range localTags {
			if slices.Contains(parentTags, tag) {
				continue
			}
			res.Tags++
			c := l.down // deletes the tag here: the parent lacks it
			if readWrite {
				c = l.up // sends it up
			}
			g.Go(func() error { return c.SyncTagDeep(gctx, repo, tag) })
		}
	}
	return res, g.Wait()
}

func (c *Copier) sourceCatalog(ctx context.Context) ([]string, error) {
	var opts []name.Option
	if !c.src.Secure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(c.src.Host, opts...)
	if err != nil {
		return nil, err
	}
	repos, err := c.srcPull.Catalog(ctx, reg)
	if err != nil {
		return nil, fmt.Errorf("catalog of %s: %w", c.src.Host, err)
	}
	return repos, nil
}

func (c *Copier) sourceTags(ctx context.Context, repo string) ([]string, error) {
	r, err := c.src.repo(repo)
	if err != nil {
		return nil, err
	}
	tags, err := c.srcPull.List(ctx, r)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tags of %s: %w", r, err)
	}
	return tags, nil
}

// manifestAccept is every manifest type a node stores, so that the parent answers
// a manifest's own bytes.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// OpenBlob reads blob (or manifest) d of repo at the parent with its size: the good
// copy a scrub or a verifying resync writes over one found corrupt here
// (registry.BlobSource).
func (l *Link) OpenBlob(ctx context.Context, repo string, d digest.Digest, manifest bool) (io.ReadCloser, int64, error) {
	src := l.down.src
	kind, h := "blobs", http.Header(nil)
	if manifest {
		kind, h = "manifests", http.Header{"Accept": {manifestAccept}}
	}
	resp, err := src.do(ctx, http.MethodGet, src.url("/v2/"+repo+"/"+kind+"/"+d.String()), nil, h)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s of %s at the parent: %w", d, repo, err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("read %s of %s at the parent: %s (length %d)", d, repo, resp.Status, resp.ContentLength)
	}
	return resp.Body, resp.ContentLength, nil
}
