package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// The node's own replication writer stores blobs here, in process, rather than
// through a blob upload over HTTP. An upload is three requests and an upload session
// on disk (start time, hash state, data, then the move and links): for a small image
// that, not the bytes, is most of the cost of a copy. Here a blob is one verified
// write, one rename (or, on S3, one committed upload) and one link, in
// distribution's own storage layout (see aliases.go), and a large one streams to
// storage without passing through the node's own HTTP server. Manifests still go through the API, so that every check and every
// event stays where it is.

// incomingRoot holds blobs being written, by digest, until they are renamed into
// place; a write that broke off leaves its part there for the next one.
const incomingRoot = "/docker/registry/v2/outpost-incoming"

// linkBlob makes blob dgst part of repo if the node holds it in any repository, and
// says whether repo holds it now.
func (r *Registry) linkBlob(ctx context.Context, repo string, dgst digest.Digest) (bool, error) {
	if _, err := r.driver.Stat(ctx, blobDataPath(dgst)); err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return false, nil
		}
		return false, fmt.Errorf("stat blob %s: %w", dgst, err)
	}
	if _, err := r.driver.Stat(ctx, layerAliasLink(repo, dgst)); err == nil {
		return true, nil
	}
	if err := r.putLayerLink(ctx, repo, dgst); err != nil {
		return false, err
	}
	return true, nil
}

// putLayerLink makes repo hold the blob dgst the node stores.
func (r *Registry) putLayerLink(ctx context.Context, repo string, dgst digest.Digest) error {
	if err := r.driver.PutContent(ctx, layerAliasLink(repo, dgst), []byte(dgst.String())); err != nil {
		return fmt.Errorf("link blob %s into %s: %w", dgst, repo, err)
	}
	return nil
}

// WriteBlob stores blob d of repo, size bytes, from what open returns from an
// offset on. The bytes are written aside, checked against d, then renamed into
// place, so a reader never sees a part of a blob. A write that breaks off keeps
// what it wrote aside: the next WriteBlob of the same blob asks open for the rest
// only, so a broken link costs what was in flight, not the blob.
func (r *Registry) WriteBlob(ctx context.Context, repo, d string, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) error {
	dgst, err := r.localDigest(repo, d)
	if err != nil {
		return err
	}
	r.note(ctx, repo, dgst) // a manifest naming it follows: kept by GC (gc.go)
	// Another write of the same blob (any repository) goes first; after it, the
	// blob is usually held and only linked.
	if err := r.incoming.claim(ctx, dgst); err != nil {
		return fmt.Errorf("write blob %s: %w", dgst, err)
	}
	defer r.incoming.release(dgst)
	// The repository is held for a write only while its link is looked at and made:
	// a repository delete need not wait for the bytes, which go to no repository.
	held, err := r.linkBlobHeld(ctx, repo, dgst)
	if err != nil || held {
		return err
	}
	if err := r.disk.check(uint64(max(size, 0))); err != nil {
		return fmt.Errorf("write blob %s into %s: %w", dgst, repo, err)
	}
	if err := r.writeAside(ctx, dgst, size, open); err != nil {
		if isDiskFull(err) { // the driver's error names the file: say only what happened
			_ = r.disk.check(0)
			return fmt.Errorf("write blob %s into %s: %w", dgst, repo, ErrDiskFull)
		}
		return fmt.Errorf("write blob %s into %s: %w", dgst, repo, err)
	}
	r.unquarantine(ctx, dgst) // a blob a scrub set aside is good again
	release, err := r.repos.write(ctx, repo)
	if err != nil {
		return fmt.Errorf("write blob %s: %w", dgst, err)
	}
	defer release()
	return r.putLayerLink(ctx, repo, dgst)
}

// linkBlobHeld is linkBlob with repo held against a repository delete.
func (r *Registry) linkBlobHeld(ctx context.Context, repo string, dgst digest.Digest) (bool, error) {
	release, err := r.repos.write(ctx, repo)
	if err != nil {
		return false, fmt.Errorf("write blob %s: %w", dgst, err)
	}
	defer release()
	return r.linkBlob(ctx, repo, dgst)
}

// writeAside stores blob dgst, checked against its digest, so that a reader never
// sees a part of it. On the filesystem the bytes go aside first and are renamed
// into place (a broken write resumes from there); on S3 one multipart upload
// straight to the blob's key does it, as the object appears only when committed.
func (r *Registry) writeAside(ctx context.Context, dgst digest.Digest, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) error {
	if r.cfg.Storage.Driver == StorageS3 {
		return r.writeCommitted(ctx, dgst, size, open)
	}
	return r.writeAndRename(ctx, dgst, size, open)
}

// writeCommitted writes the blob in one writer session and commits it only when
// the whole of it matched its digest. S3 writers cannot resume from what a broken
// write left: their parts cannot be read back to be hashed, and a writer opened
// to append to a key that does not exist yet fails. A broken write is cancelled
// (no multipart upload is left behind) and starts again from 0.
func (r *Registry) writeCommitted(ctx context.Context, dgst digest.Digest, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) error {
	fw, err := r.driver.Writer(ctx, blobDataPath(dgst), false)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_ = fw.Cancel(context.WithoutCancel(ctx))
		}
	}()
	rc, err := open(ctx, 0)
	if err != nil {
		return err
	}
	v := dgst.Verifier()
	n, err := io.Copy(io.MultiWriter(fw, v), io.LimitReader(rc, size))
	rc.Close()
	if err != nil {
		return err
	}
	if n < size {
		return fmt.Errorf("%d of %d bytes arrived", n, size)
	}
	if !v.Verified() {
		return errors.New("the content's sha256 checksum does not match the digest")
	}
	if err := fw.Commit(ctx); err != nil {
		return err
	}
	committed = true
	return fw.Close()
}

// writeAndRename appends to what an earlier write left in incomingRoot, checks the
// whole against dgst and moves it to the blob's place. The bytes are counted here,
// not by the writer: a writer's Size need not count what it still buffers.
func (r *Registry) writeAndRename(ctx context.Context, dgst digest.Digest, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) error {
	tmp := path.Join(incomingRoot, dgst.Encoded())
	fw, err := r.driver.Writer(ctx, tmp, true)
	if err != nil {
		return err
	}
	offset := fw.Size()
	v := dgst.Verifier()
	if offset > 0 && (offset > size || r.readBack(ctx, tmp, offset, v) != nil) {
		// More than the blob, or unreadable: start again.
		_ = fw.Cancel(ctx)
		if fw, err = r.driver.Writer(ctx, tmp, false); err != nil {
			return err
		}
		offset, v = 0, dgst.Verifier()
	}
	written := offset
	if offset < size {
		rc, err := open(ctx, offset)
		if err != nil {
			_ = fw.Close()
			return err
		}
		n, err := io.Copy(io.MultiWriter(fw, v), io.LimitReader(rc, size-offset))
		rc.Close()
		written += n
		if err != nil {
			_ = fw.Close() // keep what arrived, for the next write
			return err
		}
	}
	if written < size {
		_ = fw.Close() // the source ended early: keep what arrived
		return fmt.Errorf("%d of %d bytes arrived", written, size)
	}
	if !v.Verified() {
		_ = fw.Cancel(ctx)
		return errors.New("the content's sha256 checksum does not match the digest")
	}
	if err := fw.Commit(ctx); err != nil {
		_ = fw.Close()
		return err
	}
	if err := fw.Close(); err != nil {
		return err
	}
	return r.driver.Move(ctx, tmp, blobDataPath(dgst))
}

// staleIncoming is how long a part written aside waits for its write to go on.
const staleIncoming = 7 * 24 * time.Hour

// dropStaleIncoming removes parts whose writes never went on (their source lost the
// blob, say): called at start, when no write is under way.
func (r *Registry) dropStaleIncoming(ctx context.Context) error {
	parts, err := r.driver.List(ctx, incomingRoot)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range parts {
		fi, err := r.driver.Stat(ctx, p)
		if err == nil && r.cfg.Now().Sub(fi.ModTime()) > staleIncoming {
			if err := r.driver.Delete(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// readBack feeds the first n bytes written aside to w: the hash of what an earlier
// write left, read locally.
func (r *Registry) readBack(ctx context.Context, tmp string, n int64, w io.Writer) error {
	rc, err := r.driver.Reader(ctx, tmp, 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.CopyN(w, rc, n)
	return err
}

// claims keeps two writes of one blob from sharing the file they write aside: the
// second waits for the first.
type claims struct {
	mu sync.Mutex
	m  map[digest.Digest]chan struct{} // closed on release
}

// claim waits until no other write holds d, then holds it until release.
func (c *claims) claim(ctx context.Context, d digest.Digest) error {
	for {
		c.mu.Lock()
		done, busy := c.m[d]
		if !busy {
			if c.m == nil {
				c.m = map[digest.Digest]chan struct{}{}
			}
			c.m[d] = make(chan struct{})
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *claims) release(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.m[d])
	delete(c.m, d)
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
