package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// serveCatalog lists the repositories a caller may pull, with the catalog API's
// paging (n, last, Link). Admins and the node itself get distribution's own.
func (r *Registry) serveCatalog(w http.ResponseWriter, req *http.Request, c caller) {
	q := req.URL.Query()
	n := catalogMaxEntries
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			writeError(w, http.StatusBadRequest, codeUnsupported, fmt.Sprintf("n %q: want a number of repositories", s), nil)
			return
		}
		n = min(v, n)
	}
	last := q.Get("last")
	anon := r.anonymousPull()
	var out []string
	more := false
	buf := make([]string, 100)
	for {
		k, err := r.namespace.Repositories(req.Context(), buf, last)
		for _, name := range buf[:k] {
			if !c.permits(name, "pull", anon) {
				continue
			}
			if len(out) == n {
				more = true
				break
			}
			out = append(out, name)
		}
		if k > 0 {
			last = buf[k-1]
		}
		if more || errors.Is(err, io.EOF) || k == 0 {
			break
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, codeUnknown, fmt.Sprintf("list repositories: %v", err), nil)
			return
		}
	}
	if more && len(out) > 0 {
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?last=%s&n=%d>; rel="next"`, url.QueryEscape(out[len(out)-1]), n))
	}
	if out == nil {
		out = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": out})
}
