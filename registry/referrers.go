package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// referrersIndex is the durable subject -> referrers index behind the OCI 1.1
// referrers API, which distribution v3.1 lacks. It lives in the registry's own storage
// driver beside the content, so nodes that share object storage share it too.
//
//	/outpost/v1/referrers/<repo>/_subjects/<alg>/<hex>/<alg>-<hex>  descriptor JSON
//	/outpost/v1/referrers/<repo>/_referrers/<alg>/<hex>            subject digest
//
// Repository components never start with "_", so the layout cannot collide.
type referrersIndex struct {
	driver    storagedriver.StorageDriver
	namespace distribution.Namespace
}

const referrersRoot = "/outpost/v1/referrers"

func subjectDir(repo string, subject digest.Digest) string {
	return path.Join(referrersRoot, repo, "_subjects", subject.Algorithm().String(), subject.Encoded())
}

func reversePath(repo string, referrer digest.Digest) string {
	return path.Join(referrersRoot, repo, "_referrers", referrer.Algorithm().String(), referrer.Encoded())
}

func (x *referrersIndex) add(ctx context.Context, repo string, subject digest.Digest, desc v1.Descriptor) error {
	data, err := json.Marshal(desc)
	if err != nil {
		return err
	}
	entry := path.Join(subjectDir(repo, subject), desc.Digest.Algorithm().String()+"-"+desc.Digest.Encoded())
	if err := x.driver.PutContent(ctx, entry, data); err != nil {
		return fmt.Errorf("index referrer %s of %s@%s: %w", desc.Digest, repo, subject, err)
	}
	if err := x.driver.PutContent(ctx, reversePath(repo, desc.Digest), []byte(subject.String())); err != nil {
		return fmt.Errorf("index referrer %s of %s@%s: %w", desc.Digest, repo, subject, err)
	}
	return nil
}

// remove drops referrer from the index; a manifest that refers to nothing is a no-op.
func (x *referrersIndex) remove(ctx context.Context, repo string, referrer digest.Digest) error {
	rev := reversePath(repo, referrer)
	data, err := x.driver.GetContent(ctx, rev)
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unindex referrer %s in %s: %w", referrer, repo, err)
	}
	subject, err := digest.Parse(string(data))
	if err == nil {
		entry := path.Join(subjectDir(repo, subject), referrer.Algorithm().String()+"-"+referrer.Encoded())
		if err := x.driver.Delete(ctx, entry); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
			return fmt.Errorf("unindex referrer %s in %s: %w", referrer, repo, err)
		}
	}
	if err := x.driver.Delete(ctx, rev); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
		return fmt.Errorf("unindex referrer %s in %s: %w", referrer, repo, err)
	}
	return nil
}

// list returns the referrers of subject whose manifests still exist, in index order.
func (x *referrersIndex) list(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error) {
	entries, err := x.driver.List(ctx, subjectDir(repo, subject))
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s@%s: %w", repo, subject, err)
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, err
	}
	r, err := x.namespace.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	descs := make([]v1.Descriptor, 0, len(entries))
	for _, e := range entries {
		data, err := x.driver.GetContent(ctx, e)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("list referrers of %s@%s: %w", repo, subject, err)
		}
		var d v1.Descriptor
		if err := json.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("list referrers of %s@%s: entry %s: %w", repo, subject, path.Base(e), err)
		}
		// A manifest removed behind the index's back (garbage collection) is not listed.
		if ok, err := ms.Exists(ctx, d.Digest); err != nil || !ok {
			continue
		}
		descs = append(descs, d)
	}
	return descs, nil
}

// serveReferrers answers GET /v2/<name>/referrers/<digest>[?artifactType=...].
func (x *referrersIndex) serveReferrers(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "the referrers API only answers GET and HEAD", nil)
		return
	}
	subject, err := parseDigest(rt.ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid subject digest %q: %v", rt.ref, err), nil)
		return
	}
	descs, err := x.list(r.Context(), rt.name, subject)
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknown, err.Error(), nil)
		return
	}
	if want := r.URL.Query().Get("artifactType"); want != "" {
		kept := descs[:0]
		for _, d := range descs {
			if d.ArtifactType == want {
				kept = append(kept, d)
			}
		}
		descs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if descs == nil {
		descs = []v1.Descriptor{}
	}
	body, err := json.Marshal(v1.Index{
		Versioned: specsVersioned, MediaType: v1.MediaTypeImageIndex, Manifests: descs,
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknown, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// subjectOf reads the subject digest of a manifest payload, if it has one.
func subjectOf(payload []byte) string {
	var m struct {
		Subject *struct {
			Digest string `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(payload, &m) != nil || m.Subject == nil {
		return ""
	}
	return strings.TrimSpace(m.Subject.Digest)
}
