package registry

import (
	"context"
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
		if exists, err := r.repositoryExists(req.Context(), rt.name); err == nil && !exists {
			writeError(w, http.StatusNotFound, codeNameUnknown, "repository name not known to registry", map[string]string{"name": rt.name})
			return
		}
	}
	r.dist.ServeHTTP(w, req)
}

// repositoryExists says whether the repository holds a manifest (its _manifests
// directory), on any storage.
func (r *Registry) repositoryExists(ctx context.Context, name string) (bool, error) {
	_, err := r.driver.Stat(ctx, path.Join(repositoriesRoot, name, "_manifests"))
	if errors.As(err, new(storagedriver.PathNotFoundError)) {
		return false, nil
	}
	return err == nil, err
}
