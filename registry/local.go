package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// The node's own replication writer stores small blobs here, in process, rather than
// through a blob upload over HTTP. An upload is three requests and an upload session
// on disk (start time, hash state, data, then the move and links): for a small image
// that, not the bytes, is most of the cost of a copy. Here a blob is one verified
// write, one rename and one link, in distribution's own storage layout (see
// aliases.go). Manifests still go through the API, so that every check and every
// event stays where it is.

// incomingRoot holds blobs being written, until they are renamed into place.
const incomingRoot = "/docker/registry/v2/outpost-incoming"

// LinkBlob makes blob d part of repo if the node holds it in any repository, and
// says whether repo holds it now. Only sha256 blobs: others say false.
func (r *Registry) LinkBlob(ctx context.Context, repo, d string) (bool, error) {
	dgst, err := r.localDigest(repo, d)
	if err != nil {
		return false, nil
	}
	if _, err := r.driver.Stat(ctx, blobDataPath(dgst)); err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return false, nil
		}
		return false, fmt.Errorf("stat blob %s: %w", dgst, err)
	}
	if _, err := r.driver.Stat(ctx, layerAliasLink(repo, dgst)); err == nil {
		return true, nil
	}
	if err := r.driver.PutContent(ctx, layerAliasLink(repo, dgst), []byte(dgst.String())); err != nil {
		return false, fmt.Errorf("link blob %s into %s: %w", dgst, repo, err)
	}
	return true, nil
}

// PutBlob stores data as blob d of repo, after checking it against d. The bytes
// are written aside and renamed into place, so that a reader of the same blob never
// sees a part of it.
func (r *Registry) PutBlob(ctx context.Context, repo, d string, data []byte) error {
	dgst, err := r.localDigest(repo, d)
	if err != nil {
		return err
	}
	if digest.FromBytes(data) != dgst {
		return fmt.Errorf("put blob %s into %s: content does not match the digest", dgst, repo)
	}
	if _, err := r.driver.Stat(ctx, blobDataPath(dgst)); err != nil {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		tmp := path.Join(incomingRoot, hex.EncodeToString(id))
		if err := r.driver.PutContent(ctx, tmp, data); err != nil {
			return fmt.Errorf("put blob %s into %s: %w", dgst, repo, err)
		}
		if err := r.driver.Move(ctx, tmp, blobDataPath(dgst)); err != nil {
			_ = r.driver.Delete(ctx, tmp)
			return fmt.Errorf("put blob %s into %s: %w", dgst, repo, err)
		}
	}
	if err := r.driver.PutContent(ctx, layerAliasLink(repo, dgst), []byte(dgst.String())); err != nil {
		return fmt.Errorf("link blob %s into %s: %w", dgst, repo, err)
	}
	return nil
}

func (r *Registry) localDigest(repo, d string) (digest.Digest, error) {
	if !validName(repo) {
		return "", fmt.Errorf("repository %q: not a valid name", repo)
	}
	dgst, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("blob %q: %w", d, err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("blob %s: only sha256 blobs are written in process", dgst)
	}
	return dgst, nil
}
