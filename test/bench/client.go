package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// client talks to one registry. Every registry gets the same options but for its
// credentials (none at plain distribution); the pusher and puller are reused so that
// the /v2/ ping, and at an Outpost node the registry token, happen once per
// repository, not per image.
type client struct {
	registry  name.Registry
	jobs      int
	transport *http.Transport
	opts      []remote.Option
	pusher    *remote.Pusher
	puller    *remote.Puller
}

func newClient(ctx context.Context, srv *server, jobs int) (*client, error) {
	reg, err := name.NewRegistry(srv.addr, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", srv.addr, err)
	}
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithJobs(jobs),
		remote.WithAuth(srv.creds.authenticator())}
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

// resolve returns the digest a tag has, by a manifest HEAD; ok is false while the
// registry does not know the tag (or the repository).
func (c *client) resolve(ctx context.Context, repo, tag string) (_ v1.Hash, ok bool, _ error) {
	desc, err := c.puller.Head(ctx, c.ref(repo, tag))
	if notFound(err) {
		return v1.Hash{}, false, nil
	}
	if err != nil {
		return v1.Hash{}, false, fmt.Errorf("HEAD %s: %w", c.ref(repo, tag), err)
	}
	return desc.Digest, true, nil
}

// verifyAll checks that every image's tag resolves to its digest.
func (c *client) verifyAll(ctx context.Context, repo string, imgs []image) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, im := range imgs {
		g.Go(func() error {
			got, ok, err := c.resolve(ctx, repo, im.tag)
			if err == nil && got != im.digest {
				err = fmt.Errorf("%s resolves to %q (found %t), want %s", c.ref(repo, im.tag), got, ok, im.digest)
			}
			return err
		})
	}
	return g.Wait()
}

// tags lists a repository's tags; none while the registry does not know it.
func (c *client) tags(ctx context.Context, repo string) ([]string, error) {
	tags, err := c.puller.List(ctx, c.registry.Repo(repo))
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", c.registry.Repo(repo), err)
	}
	return tags, nil
}

func notFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}
