package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
)

// serve checks what distribution would let through or answer badly, then hands the
// request to the distribution app.
func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	rt := parseRoute(req.URL.Path)
	if rt.kind == routeOther {
		if _, ok := req.Header["Authorization"]; ok || req.URL.Path != "/v2" {
			writeError(w, http.StatusNotFound, codeNameInvalid, fmt.Sprintf("no such API path %q", req.URL.Path), nil)
			return
		}
	}
	if rt.name != "" && !validName(rt.name) {
		writeError(w, http.StatusBadRequest, codeNameInvalid,
			fmt.Sprintf("invalid repository name %q: lowercase letters, digits and separators (. _ __ -) in /-separated components, at most %d characters", rt.name, maxNameLength), nil)
		return
	}
	need := needs(req, rt)
	c, err := r.authenticate(req)
	if err == nil {
		if e := r.authorize(c, need); e != nil {
			err = e
		}
	}
	if err == nil {
		var withCaller *http.Request
		if withCaller, err = r.withCaller(req, c); err == nil {
			req = withCaller
		}
	}
	if err != nil {
		r.challenge(w, req, err.(*authError), need)
		return
	}
	rep, _ := replicaFrom(req.Context())
	if r.cfg.Mode == ReadOnly && isWrite(req.Method) && rt.kind != routeReferrers && !rep.internal {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported,
			fmt.Sprintf("node %s is read-only: pushes and deletes are refused here; push to a ReadWrite node", r.cfg.Node), nil)
		return
	}
	r.noteRequest(req, rt, c) // before it is served: see the grace rule in gc.go
	if isWrite(req.Method) && rt.name != "" {
		// The whole request, so that a repository delete comes before or after it.
		release, err := r.repos.write(req.Context(), rt.name)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, codeUnknown, err.Error(), nil)
			return
		}
		defer release()
		if rt.kind == routeManifest {
			// Manifest and tag deletes alone among the repository's manifest writes:
			// distribution deletes a manifest, then untags what it finds pointing at
			// it, so a tag put in between was left on a deleted manifest; a tag put
			// racing a tag delete likewise.
			lock := r.repos.write
			if req.Method == http.MethodDelete {
				lock = func(ctx context.Context, name string) (func(), error) {
					return r.repos.delete(ctx, name, r.cfg.RepositoryDeleteWait)
				}
			}
			release, err := lock(req.Context(), rt.name+manifestsKey)
			if err != nil {
				status := http.StatusServiceUnavailable
				if errors.Is(err, ErrRepositoryBusy) {
					status = http.StatusConflict
					w.Header().Set("Retry-After", "5")
				}
				writeError(w, status, codeUnknown, err.Error(), nil)
				return
			}
			defer release()
		}
	}
	switch rt.kind {
	case routeCatalog:
		if c.Admin || c.internal {
			r.dist.ServeHTTP(w, req)
		} else {
			r.serveCatalog(w, req, c)
		}
	case routeReferrers:
		r.referrers.serveReferrers(w, req, rt)
	case routeManifest:
		r.serveManifest(w, req, rt)
	case routeBlob:
		r.serveBlob(w, req, rt)
	case routeUpload:
		r.serveUpload(w, req, rt)
	case routeTags:
		r.serveTags(w, req, rt)
	default:
		r.dist.ServeHTTP(w, req)
	}
}

func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func (r *Registry) serveManifest(w http.ResponseWriter, req *http.Request, rt route) {
	var dgst digest.Digest
	if isDigestRef(rt.ref) {
		d, err := parseDigest(rt.ref)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q: %v", rt.ref, err), nil)
			return
		}
		dgst = d
	} else if !tagRegexp.MatchString(rt.ref) {
		writeError(w, http.StatusBadRequest, codeManifestInvalid,
			fmt.Sprintf("invalid reference %q: a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -; a digest is algorithm:hex", rt.ref), nil)
		return
	}
	if req.Method == http.MethodDelete && dgst != "" && dgst.Algorithm() != digest.Canonical {
		r.deleteAliasedManifest(w, req, rt, dgst)
		return
	}
	if req.Method != http.MethodPut {
		r.dist.ServeHTTP(w, req)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxManifestSize+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, codeManifestInvalid, fmt.Sprintf("read manifest: %v", err), nil)
		return
	}
	if len(body) > maxManifestSize {
		writeError(w, http.StatusRequestEntityTooLarge, codeSizeInvalid,
			fmt.Sprintf("manifest is larger than the limit of %d bytes", maxManifestSize), nil)
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	r.noteManifest(req.Context(), rt.name, dgst, body) // before distribution checks its blobs (gc.go)
	subject := subjectOf(body)
	if dgst != "" && dgst.Algorithm() != digest.Canonical {
		r.putAliasedManifest(w, req, rt, dgst, body, subject)
		return
	}
	r.dist.ServeHTTP(&headerOnSuccess{ResponseWriter: w, status: http.StatusCreated, key: "OCI-Subject", value: subject}, req)
}

// headerOnSuccess sets a header when the response status is the one expected.
type headerOnSuccess struct {
	http.ResponseWriter
	status     int
	key, value string
	wrote      bool
}

func (h *headerOnSuccess) WriteHeader(code int) {
	if !h.wrote && code == h.status && h.value != "" {
		h.Header().Set(h.key, h.value)
	}
	h.wrote = true
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerOnSuccess) Write(p []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (h *headerOnSuccess) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (r *Registry) serveBlob(w http.ResponseWriter, req *http.Request, rt route) {
	dgst, err := parseDigest(rt.ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q: %v", rt.ref, err), nil)
		return
	}
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		if msg, bad := r.serveQuarantined(req.Context(), dgst); bad {
			writeError(w, http.StatusNotFound, codeBlobUnknown, msg, map[string]string{"digest": dgst.String()})
			return
		}
	}
	if dgst.Algorithm() != digest.Canonical {
		// distribution stores every blob under its sha256 and answers with that digest;
		// the client asked by another one and must see it back.
		w = &headerOnSuccess{ResponseWriter: w, status: http.StatusOK, key: "Docker-Content-Digest", value: dgst.String()}
	}
	r.dist.ServeHTTP(w, req)
}

// queryOnlyForm makes distribution read its request parameters (mount, from,
// digest, _state) from the query string only, as Outpost's checks do. distribution
// reads them with r.FormValue, which also parses a form body (urlencoded or
// multipart, and the body's value wins): a mount's from in the body would skip the
// pull check on the query's. With the form set to the query, both read the same.
func queryOnlyForm(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req = req.WithContext(req.Context()) // a shallow copy: the caller's request stays as it was
		req.Form = req.URL.Query()
		req.PostForm = url.Values{}
		req.MultipartForm = &multipart.Form{Value: map[string][]string{}, File: map[string][]*multipart.FileHeader{}}
		next.ServeHTTP(w, req)
	})
}

// uploadParams are the query parameters distribution acts on in a blob upload.
var uploadParams = []string{"mount", "from", "digest", "_state"}

// checkUploadParams refuses what no client sends and a reader could take two ways:
// an upload parameter given twice, or a form body on the POST that starts an upload.
func checkUploadParams(req *http.Request, q url.Values) error {
	for _, k := range uploadParams {
		if n := len(q[k]); n > 1 {
			return fmt.Errorf("query parameter %q given %d times: give it once", k, n)
		}
	}
	if req.Method == http.MethodPost {
		if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err == nil &&
			(mt == "application/x-www-form-urlencoded" || strings.HasPrefix(mt, "multipart/")) {
			return fmt.Errorf("a form body (Content-Type %s) is not accepted: a blob upload takes mount, from and digest in the query string", mt)
		}
	}
	return nil
}

func (r *Registry) serveUpload(w http.ResponseWriter, req *http.Request, rt route) {
	q := req.URL.Query()
	if err := checkUploadParams(req, q); err != nil {
		writeError(w, http.StatusBadRequest, codeUnsupported, err.Error(), nil)
		return
	}
	if s := q.Get("digest"); s != "" {
		dgst, err := parseDigest(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q: %v", s, err), nil)
			return
		}
		if dgst.Algorithm() != digest.Canonical {
			w = &headerOnSuccess{ResponseWriter: w, status: http.StatusCreated, key: "Docker-Content-Digest", value: dgst.String()}
		}
	}
	if req.Method == http.MethodPut && req.Header.Get("Content-Range") != "" && rt.ref != "" {
		if ok := r.checkChunkOffset(w, req, rt); !ok {
			return
		}
	}
	if from := q.Get("from"); from != "" && req.Method == http.MethodPost && !r.mayMountFrom(req, from) {
		q.Del("mount")
		q.Del("from")
		req.URL.RawQuery = q.Encode()
	}
	if s := q.Get("mount"); s != "" && req.Method == http.MethodPost {
		dgst, err := parseDigest(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q: %v", s, err), nil)
			return
		}
		if dgst.Algorithm() != digest.Canonical {
			r.mountAlias(w, req, rt, dgst, q.Get("from"))
			return
		}
	}
	r.dist.ServeHTTP(w, req)
}

// checkChunkOffset refuses a closing PUT whose chunk does not start where the upload
// ends. distribution checks this for PATCH but appends a PUT's chunk wherever it
// claims to start, and then fails on the digest instead.
func (r *Registry) checkChunkOffset(w http.ResponseWriter, req *http.Request, rt route) bool {
	var start, end int64
	if _, err := fmt.Sscanf(req.Header.Get("Content-Range"), "%d-%d", &start, &end); err != nil {
		writeError(w, http.StatusBadRequest, codeRangeInvalid, fmt.Sprintf("Content-Range %q: want start-end", req.Header.Get("Content-Range")), nil)
		return false
	}
	offset := r.uploadOffset(req.Context(), rt.name, rt.ref)
	if start != offset {
		if offset > 0 {
			w.Header().Set("Range", fmt.Sprintf("0-%d", offset-1))
		}
		w.Header().Set("Location", req.URL.Path)
		writeError(w, http.StatusRequestedRangeNotSatisfiable, codeRangeInvalid,
			fmt.Sprintf("chunk starts at %d but the upload holds %d bytes", start, offset), nil)
		return false
	}
	return true
}

// uploadOffset is how many bytes an upload holds; 0 when it holds none or is
// unknown (distribution then answers for it). On S3 an upload's data is a
// multipart upload, which is no object until committed: its size is the sum of
// its parts, which distribution flushes at the end of every request.
func (r *Registry) uploadOffset(ctx context.Context, repo, id string) int64 {
	p := uploadDataPath(repo, id)
	if r.cfg.Storage.Driver != StorageS3 {
		if fi, err := r.driver.Stat(ctx, p); err == nil {
			return fi.Size()
		}
		return 0
	}
	fw, err := r.driver.Writer(ctx, p, true)
	if err != nil {
		return 0
	}
	defer fw.Close() // nothing buffered: closing writes nothing
	return fw.Size()
}
