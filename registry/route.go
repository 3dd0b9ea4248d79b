package registry

import (
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// routeKind is which part of the OCI distribution API a request addresses.
type routeKind string

const (
	routeBase      routeKind = "base"
	routeCatalog   routeKind = "catalog"
	routeManifest  routeKind = "manifests"
	routeBlob      routeKind = "blobs"
	routeUpload    routeKind = "blob_uploads"
	routeTags      routeKind = "tags"
	routeReferrers routeKind = "referrers"
	routeOther     routeKind = "other"
)

// route is a parsed /v2/ path: the repository name and the reference (tag, digest or
// upload id) it addresses.
type route struct {
	kind routeKind
	name string
	ref  string
}

// The OCI distribution-spec grammar, stricter than distribution's router (which
// lets an uppercase first component through as a "domain").
var (
	nameRegexp = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRegexp  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// The suffixes the API puts after a repository name.
	suffixRegexp = regexp.MustCompile(`/(manifests/[^/]*|blobs/uploads/[^/]*|blobs/[^/]*|tags/list|referrers/[^/]*)$`)
)

const maxNameLength = 255

// parseRoute splits a request path. Paths outside /v2/ give routeOther.
func parseRoute(path string) route {
	switch {
	case path == "/v2/" || path == "/v2":
		return route{kind: routeBase}
	case path == "/v2/_catalog":
		return route{kind: routeCatalog}
	case !strings.HasPrefix(path, "/v2/"):
		return route{kind: routeOther}
	}
	rest := strings.TrimPrefix(path, "/v2/")
	loc := suffixRegexp.FindStringIndex("/" + rest)
	if loc == nil {
		return route{kind: routeOther}
	}
	name := rest[:max(loc[0]-1, 0)]
	suffix := rest[loc[0]:]
	r := route{name: name}
	switch {
	case strings.HasPrefix(suffix, "manifests/"):
		r.kind, r.ref = routeManifest, strings.TrimPrefix(suffix, "manifests/")
	case strings.HasPrefix(suffix, "blobs/uploads/"):
		r.kind, r.ref = routeUpload, strings.TrimPrefix(suffix, "blobs/uploads/")
	case strings.HasPrefix(suffix, "blobs/"):
		r.kind, r.ref = routeBlob, strings.TrimPrefix(suffix, "blobs/")
	case suffix == "tags/list":
		r.kind = routeTags
	case strings.HasPrefix(suffix, "referrers/"):
		r.kind, r.ref = routeReferrers, strings.TrimPrefix(suffix, "referrers/")
	}
	return r
}

// validName reports whether name is a repository name the OCI spec allows.
func validName(name string) bool {
	return len(name) <= maxNameLength && nameRegexp.MatchString(name)
}

// isDigestRef reports whether a manifest reference is meant as a digest.
func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }

// parseDigest validates a digest with an algorithm this node can compute.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", err
	}
	return d, nil
}
