package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/outpost-edge/outpost/events"
)

// ErrRepositoryUnknown is returned for a repository the node does not hold.
var ErrRepositoryUnknown = errors.New("repository unknown")

// ErrReadOnly is returned for a change refused because the node is ReadOnly.
var ErrReadOnly = errors.New("node is read-only")

// DeleteRepository removes a repository's tags, manifests, blob links, uploads and
// referrers (blobs themselves go at garbage collection), then records one
// repository-delete event. The OCI API has no repository delete; this is Outpost's.
func (r *Registry) DeleteRepository(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("delete repository %q: invalid name", name)
	}
	if rep, _ := replicaFrom(ctx); r.cfg.Mode == ReadOnly && !rep.internal {
		return fmt.Errorf("delete repository %s: %w", name, ErrReadOnly)
	}
	// Alone with the repository: a write to it at this node completes before (and is
	// deleted) or starts after (and is kept whole), and the event follows the same order.
	release, err := r.repos.delete(ctx, name, r.cfg.RepositoryDeleteWait)
	if err != nil {
		return fmt.Errorf("delete repository %s: %w", name, err)
	}
	defer release()
	repoDir := path.Join(repositoriesRoot, name)
	if exists, err := r.repositoryExists(ctx, name); err != nil {
		return fmt.Errorf("delete repository %s: %w", name, err)
	} else if !exists {
		return fmt.Errorf("delete repository %s: %w", name, ErrRepositoryUnknown)
	}
	// Only this repository's own directories: nested repositories (name/sub) live
	// below the same path and stay.
	for _, dir := range []string{
		path.Join(repoDir, "_manifests"), path.Join(repoDir, "_layers"), path.Join(repoDir, "_uploads"),
		path.Join(referrersRoot, name, "_subjects"), path.Join(referrersRoot, name, "_referrers"),
	} {
		if err := r.driver.Delete(ctx, dir); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
			return fmt.Errorf("delete repository %s: %w", name, err)
		}
	}
	h := &hook{node: r.cfg.Node, publisher: r.cfg.Publisher, health: r.health}
	return h.publish(ctx, &events.Event{Action: events.ActionRepositoryDelete, Repository: name})
}

// RepositoryHandler serves DELETE /outpost/v1/repositories/<name>.
func (r *Registry) RepositoryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(req.URL.Path, "/outpost/v1/repositories/")
		if req.Method != http.MethodDelete {
			w.Header().Set("Allow", "DELETE")
			writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "repositories: only DELETE is served here", nil)
			return
		}
		if !validName(name) {
			writeError(w, http.StatusBadRequest, codeNameInvalid, fmt.Sprintf("delete repository %q: invalid name", name), nil)
			return
		}
		req, ok := r.guard(w, req, []access{{repo: name, actions: []string{"delete"}}})
		if !ok {
			return
		}
		err := r.DeleteRepository(req.Context(), name)
		switch {
		case err == nil:
			w.WriteHeader(http.StatusAccepted)
		case errors.Is(err, ErrReadOnly):
			writeError(w, http.StatusMethodNotAllowed, codeUnsupported,
				fmt.Sprintf("node %s is read-only: repository delete is refused here", r.cfg.Node), nil)
		case errors.Is(err, ErrRepositoryBusy):
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusConflict, codeUnknown, err.Error()+": try again", nil)
		case errors.Is(err, ErrRepositoryUnknown):
			writeError(w, http.StatusNotFound, codeNameUnknown, err.Error(), nil)
		default:
			writeError(w, http.StatusInternalServerError, codeUnknown, err.Error(), nil)
		}
	})
}
