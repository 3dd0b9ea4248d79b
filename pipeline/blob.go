package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// Large blobs are copied in chunks that the destination confirms, so that a broken
// link costs the unconfirmed part of one chunk, not the whole blob: the copy asks the
// destination how far its upload got and reads the source again from there.
const (
	// resumeThreshold is the blob size from which copies are resumable.
	resumeThreshold = 32 << 20
	// chunkSize is how much one PATCH carries.
	chunkSize = 16 << 20
	// resumeAttempts bounds the resumes of one blob within one copy.
	resumeAttempts = 50
)

// LocalBlobs is a registry's storage, written in process: a copy into the node's own
// registry needs no upload sessions, and nothing of it crosses HTTP but the manifest.
type LocalBlobs interface {
	// WriteBlob makes repo hold blob digest, size bytes: linked if the registry
	// holds it in any repository already, else read from open (from an offset on),
	// checked against digest and stored. A write that breaks off keeps what
	// arrived: the next one of the same blob asks open for the rest only.
	WriteBlob(ctx context.Context, repo, digest string, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) error
}

// writeBlobsLocally makes the destination's own storage hold every blob of img in
// repo, up to blobJobs blobs at once.
func (c *Copier) writeBlobsLocally(ctx context.Context, repo string, img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(blobJobs)
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !desc.MediaType.IsDistributable() {
			continue // a foreign layer: its URLs say where it lives
		}
		g.Go(func() error { return c.writeBlobLocally(gctx, repo, desc) })
	}
	return g.Wait()
}

// blobJobs is how many blobs of one image a copy moves at once.
const blobJobs = 4

// writeBlobLocally writes one blob, resuming after a broken link from what the
// destination kept. Any other failure (a corrupt copy, storage) goes back to the
// caller, which logs it and tries again later.
func (c *Copier) writeBlobLocally(ctx context.Context, repo string, desc v1.Descriptor) error {
	var broken bool // the last attempt's source read failed
	open := func(ctx context.Context, offset int64) (io.ReadCloser, error) {
		rc, err := c.readSource(ctx, repo, desc.Digest, offset)
		if err != nil {
			return nil, err
		}
		return &watchedBody{ReadCloser: rc, broken: &broken}, nil
	}
	retry := newRetry()
	for attempt := 0; ; {
		broken = false
		err := c.dst.Blobs.WriteBlob(ctx, repo, desc.Digest.String(), desc.Size, open)
		if err == nil || ctx.Err() != nil || !broken {
			return err
		}
		if attempt++; attempt > resumeAttempts {
			return fmt.Errorf("copy blob %s: gave up after %d resumes: %w", desc.Digest, resumeAttempts, err)
		}
		Sleep(ctx, retry.Next())
	}
}

// watchedBody notes when reading the source fails (not at its end): the link broke.
type watchedBody struct {
	io.ReadCloser
	broken *bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		*b.broken = true
	}
	return n, err
}

// readSource reads a blob of the source from offset on.
func (c *Copier) readSource(ctx context.Context, repo string, d v1.Hash, offset int64) (io.ReadCloser, error) {
	var h http.Header
	if offset > 0 {
		h = http.Header{"Range": {fmt.Sprintf("bytes=%d-", offset)}}
	}
	resp, err := c.src.do(ctx, http.MethodGet, c.src.url("/v2/"+repo+"/blobs/"+d.String()), nil, h)
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", d, offset, err)
	}
	if resp.StatusCode != http.StatusPartialContent && !(offset == 0 && resp.StatusCode == http.StatusOK) {
		resp.Body.Close()
		return nil, fmt.Errorf("read %s from %d: %s", d, offset, resp.Status)
	}
	return resp.Body, nil
}

// copyLargeLayers makes sure the destination holds every layer of img that is at
// least resumeThreshold, before the manifest push that would otherwise stream them
// whole.
func (c *Copier) copyLargeLayers(ctx context.Context, repo string, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil || size < resumeThreshold {
			continue
		}
		d, err := l.Digest()
		if err != nil {
			return err
		}
		if err := c.copyBlobResumable(ctx, repo, d, size); err != nil {
			return err
		}
	}
	return nil
}

func (c *Copier) copyBlobResumable(ctx context.Context, repo string, d v1.Hash, size int64) error {
	dstBlob := c.dst.url("/v2/" + repo + "/blobs/" + d.String())
	if resp, err := c.dst.do(ctx, http.MethodHead, dstBlob, nil, nil); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	resp, err := c.dst.do(ctx, http.MethodPost, c.dst.url("/v2/"+repo+"/blobs/uploads/"), nil, nil)
	if err != nil {
		return fmt.Errorf("start upload of %s: %w", d, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload of %s: %s", d, resp.Status)
	}
	loc, err := c.dst.resolve(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("start upload of %s: %w", d, err)
	}
	var offset int64
	retry := newRetry()
	for attempt := 0; offset < size; {
		next, err := c.sendChunks(ctx, repo, d, loc, offset, size)
		if err == nil {
			offset, loc = next.offset, next.location
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt++; attempt > resumeAttempts {
			return fmt.Errorf("copy blob %s: gave up after %d resumes: %w", d, resumeAttempts, err)
		}
		// Resume from what the destination confirms, whatever was sent.
		Sleep(ctx, retry.Next())
		st, serr := c.uploadStatus(ctx, loc)
		if serr != nil {
			continue // the destination is unreachable: try again
		}
		offset, loc = st.offset, st.location
	}
	req := loc + sep(loc) + "digest=" + url.QueryEscape(d.String())
	resp, err = c.dst.do(ctx, http.MethodPut, req, nil, nil)
	if err != nil {
		return fmt.Errorf("finish upload of %s: %w", d, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("finish upload of %s: %s", d, resp.Status)
	}
	return nil
}

type uploadState struct {
	offset   int64
	location string
}

// sendChunks streams the source blob from offset to the upload, one PATCH per
// chunk, and returns how far the destination confirmed.
func (c *Copier) sendChunks(ctx context.Context, repo string, d v1.Hash, loc string, offset, size int64) (uploadState, error) {
	body, err := c.readSource(ctx, repo, d, offset)
	if err != nil {
		return uploadState{}, err
	}
	defer body.Close()
	st := uploadState{offset: offset, location: loc}
	for st.offset < size {
		n := min(chunkSize, size-st.offset)
		h := http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", st.offset, st.offset+n-1)},
		}
		presp, err := c.dst.doLength(ctx, http.MethodPatch, st.location, io.LimitReader(body, n), h, n)
		if err != nil {
			return st, fmt.Errorf("send %d bytes at %d: %w", n, st.offset, err)
		}
		presp.Body.Close()
		if presp.StatusCode != http.StatusAccepted {
			return st, fmt.Errorf("send %d bytes at %d: %s", n, st.offset, presp.Status)
		}
		if st, err = c.confirmed(presp); err != nil {
			return st, err
		}
	}
	return st, nil
}

// uploadStatus asks the destination how far an upload got.
func (c *Copier) uploadStatus(ctx context.Context, loc string) (uploadState, error) {
	resp, err := c.dst.do(ctx, http.MethodGet, loc, nil, nil)
	if err != nil {
		return uploadState{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return uploadState{}, fmt.Errorf("upload status: %s", resp.Status)
	}
	return c.confirmed(resp)
}

// confirmed reads the Range ("0-<last>") and Location of an upload response.
func (c *Copier) confirmed(resp *http.Response) (uploadState, error) {
	loc, err := c.dst.resolve(resp.Header.Get("Location"))
	if err != nil {
		return uploadState{}, err
	}
	st := uploadState{location: loc}
	r := resp.Header.Get("Range")
	if _, last, ok := strings.Cut(r, "-"); ok && r != "0-0" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil {
			return st, fmt.Errorf("upload range %q", r)
		}
		st.offset = n + 1
	} else if r == "0-0" {
		// distribution says 0-0 for 0 and for 1 byte; with chunks of megabytes it is 0.
		st.offset = 0
	}
	return st, nil
}

func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

func (e Endpoint) url(path string) string { return e.scheme() + "://" + e.Host + path }

// resolve makes an upload Location absolute.
func (e Endpoint) resolve(loc string) (string, error) {
	if loc == "" {
		return "", errors.New("upload answer has no Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	return (&url.URL{Scheme: e.scheme(), Host: e.Host}).ResolveReference(u).String(), nil
}

func (e Endpoint) do(ctx context.Context, method, u string, body io.Reader, h http.Header) (*http.Response, error) {
	return e.doLength(ctx, method, u, body, h, 0)
}

// doLength sends one request with the endpoint's transport and credentials.
func (e Endpoint) doLength(ctx context.Context, method, u string, body io.Reader, h http.Header, length int64) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		cancel()
		return nil, err
	}
	req.ContentLength = length
	for k, v := range h {
		req.Header[k] = v
	}
	if e.User != "" {
		req.SetBasicAuth(e.User, e.Password)
	}
	resp, err := (&http.Client{Transport: e.transport()}).Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
