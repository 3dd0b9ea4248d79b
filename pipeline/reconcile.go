package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
