package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Content addressed by a digest other than sha256 (sha512, as OCI 1.1 allows).
//
// distribution stores every blob and manifest under its sha256 and resolves other
// digests through alias links: <repo>/_layers/<alg>/<hex>/link holds the sha256 digest.
// Its blob uploads already write such links; its manifest PUT and cross-repository
// mount do not. These handlers add the missing links, in the same layout, so that
// distribution's own readers resolve them. The layout is distribution's storage
// format (registry/storage/paths.go), stable since v2.

const repositoriesRoot = "/docker/registry/v2/repositories"

func manifestAliasLink(repo string, d digest.Digest) string {
	return path.Join(repositoriesRoot, repo, "_manifests/revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func layerAliasLink(repo string, d digest.Digest) string {
	return path.Join(repositoriesRoot, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

// blobDataPath is where distribution keeps a blob's bytes, shared by all repositories.
func blobDataPath(d digest.Digest) string {
	return path.Join("/docker/registry/v2/blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

func uploadDataPath(repo, id string) string {
	return path.Join(repositoriesRoot, repo, "_uploads", id, "data")
}

// putAliasedManifest stores a manifest pushed by a non-sha256 digest: it checks the
// content against that digest, lets distribution store it under its sha256, then
// links the requested digest to it.
func (r *Registry) putAliasedManifest(w http.ResponseWriter, req *http.Request, rt route, dgst digest.Digest, body []byte, subject string) {
	v := dgst.Verifier()
	_, _ = v.Write(body)
	if !v.Verified() {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("manifest content does not match digest %s", dgst), nil)
		return
	}
	canonical := digest.FromBytes(body)
	inner := req.Clone(req.Context())
	inner.URL.Path = "/v2/" + rt.name + "/manifests/" + canonical.String()
	inner.URL.RawPath = ""
	inner.Body = io.NopCloser(bytes.NewReader(body))
	rec := newRecorder()
	r.dist.ServeHTTP(rec, inner)
	if rec.status == http.StatusCreated {
		if err := r.driver.PutContent(req.Context(), manifestAliasLink(rt.name, dgst), []byte(canonical.String())); err != nil {
			writeError(w, http.StatusInternalServerError, codeUnknown, fmt.Sprintf("link %s to %s: %v", dgst, canonical, err), nil)
			return
		}
		rec.header.Set("Location", "/v2/"+rt.name+"/manifests/"+dgst.String())
		rec.header.Set("Docker-Content-Digest", dgst.String())
		if subject != "" {
			rec.header.Set("OCI-Subject", subject)
		}
	}
	rec.replay(w)
}

// deleteAliasedManifest deletes the alias and the sha256 revision behind it, so that
// neither digest resolves afterwards.
func (r *Registry) deleteAliasedManifest(w http.ResponseWriter, req *http.Request, rt route, dgst digest.Digest) {
	target, err := r.driver.GetContent(req.Context(), manifestAliasLink(rt.name, dgst))
	if err != nil {
		r.dist.ServeHTTP(w, req) // distribution answers MANIFEST_UNKNOWN in its own words
		return
	}
	rec := newRecorder()
	r.dist.ServeHTTP(rec, req)
	if rec.status == http.StatusAccepted {
		if canonical, err := digest.Parse(string(target)); err == nil {
			if err := r.deleteRevision(req.Context(), rt.name, canonical); err != nil {
				writeError(w, http.StatusInternalServerError, codeUnknown, err.Error(), nil)
				return
			}
		}
	}
	rec.replay(w)
}

func (r *Registry) deleteRevision(ctx context.Context, repo string, d digest.Digest) error {
	err := r.driver.Delete(ctx, path.Dir(manifestAliasLink(repo, d)))
	if err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return fmt.Errorf("delete revision %s@%s: %w", repo, d, err)
	}
	return nil
}

// mountAlias mounts a blob named by a non-sha256 digest from another repository:
// distribution mounts the sha256 content, and the alias link is added in the target.
func (r *Registry) mountAlias(w http.ResponseWriter, req *http.Request, rt route, dgst digest.Digest, from string) {
	inner := req.Clone(req.Context())
	q := inner.URL.Query()
	canonical, ok := r.statBlob(req.Context(), from, dgst)
	if !ok {
		// Nothing to mount: start an ordinary upload, as the spec asks.
		q.Del("mount")
		q.Del("from")
		inner.URL.RawQuery = q.Encode()
		r.dist.ServeHTTP(w, inner)
		return
	}
	q.Set("mount", canonical.String())
	inner.URL.RawQuery = q.Encode()
	rec := newRecorder()
	r.dist.ServeHTTP(rec, inner)
	if rec.status == http.StatusCreated {
		if err := r.driver.PutContent(req.Context(), layerAliasLink(rt.name, dgst), []byte(canonical.String())); err != nil {
			writeError(w, http.StatusInternalServerError, codeUnknown, fmt.Sprintf("link %s to %s: %v", dgst, canonical, err), nil)
			return
		}
		rec.header.Set("Location", "/v2/"+rt.name+"/blobs/"+dgst.String())
		rec.header.Set("Docker-Content-Digest", dgst.String())
	}
	rec.replay(w)
}

// statBlob finds the sha256 digest of a blob that repo holds under d.
func (r *Registry) statBlob(ctx context.Context, repo string, d digest.Digest) (digest.Digest, bool) {
	if repo == "" || !validName(repo) {
		return "", false
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return "", false
	}
	rp, err := r.namespace.Repository(ctx, named)
	if err != nil {
		return "", false
	}
	desc, err := rp.Blobs(ctx).Stat(ctx, d)
	if err != nil {
		return "", false
	}
	return desc.Digest, true
}

// recorder holds a response so that it can be completed before the client sees it.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
}

func (rec *recorder) Write(p []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	return rec.body.Write(p)
}

func (rec *recorder) replay(w http.ResponseWriter) {
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}
