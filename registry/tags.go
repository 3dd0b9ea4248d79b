package registry

import (
	"errors"
	"net/http"
	"path"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// serveTags answers a tag list. distribution answers it for a repository it does
// not hold with 404 NAME_UNKNOWN on the filesystem, but with 200 and no tags on
// S3, whose walk of a key prefix that does not exist finds nothing rather than
// failing. A repository exists here once it holds a manifest, on any storage.
func (r *Registry) serveTags(w http.ResponseWriter, req *http.Request, rt route) {
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		_, err := r.driver.Stat(req.Context(), path.Join(repositoriesRoot, rt.name, "_manifests"))
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			writeError(w, http.StatusNotFound, codeNameUnknown, "repository name not known to registry", map[string]string{"name": rt.name})
			return
		}
	}
	r.dist.ServeHTTP(w, req)
}
