package registry

import (
	"context"
	"errors"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// repositoryLink is one link file of a repository: a layer link
// (<repo>/_layers/<alg>/<hex>/link) or a manifest revision
// (<repo>/_manifests/revisions/<alg>/<hex>/link).
type repositoryLink struct {
	Repo string
	// Digest is the one the path names (a sha512 alias's own, not its target).
	Digest digest.Digest
	// Manifest is true for a manifest revision, false for a layer link.
	Manifest bool
	// Path is the link file's storage path; Info its entry.
	Path string
	Info storagedriver.FileInfo
}

// walkRepositoryLinks calls fn with every layer link and manifest revision of every
// repository, through the storage driver (filesystem or S3). Tags and uploads are
// not walked, and paths that name no valid digest are passed over. Nothing stored
// yet is no error; an error from fn, or ctx ending, stops the walk.
func (r *Registry) walkRepositoryLinks(ctx context.Context, fn func(repositoryLink) error) error {
	err := r.driver.Walk(ctx, repositoriesRoot, func(fi storagedriver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := fi.Path()
		base := path.Base(p)
		if fi.IsDir() && (base == "_uploads" || (base == "tags" && path.Base(path.Dir(p)) == "_manifests")) {
			return storagedriver.ErrSkipDir
		}
		if fi.IsDir() || base != "link" {
			return nil
		}
		rest := strings.TrimPrefix(p, repositoriesRoot+"/")
		for _, kind := range []string{"/_layers/", "/_manifests/revisions/"} {
			repo, tail, ok := strings.Cut(rest, kind)
			if !ok {
				continue
			}
			parts := strings.Split(tail, "/") // <alg>/<hex>/link
			if len(parts) != 3 {
				continue
			}
			d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
			if d.Validate() != nil {
				continue
			}
			if err := fn(repositoryLink{Repo: repo, Digest: d, Manifest: kind != "/_layers/", Path: p, Info: fi}); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	return err
}
