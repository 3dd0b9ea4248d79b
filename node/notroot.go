package node

import (
	"fmt"
	"net/http"
	"strings"
)

// serveNotRoot answers the management API's paths at a node that is not the root.
// Nodes and tokens are managed at the root only: a site holds a copy of its own
// subtree, which may lag behind, and a change made there would reach nobody. So
// the answer names the root's role and the site's parent rather than listing a
// partial tree (`outpost status` at the site shows the site and its children).
// 421 Misdirected Request: the request is fine, this node is the wrong one.
func (n *Node) serveNotRoot(w http.ResponseWriter, r *http.Request) {
	what := "node management"
	if strings.HasPrefix(r.URL.Path, "/outpost/v1/tokens") {
		what = "client token management"
	}
	parent := "its parent"
	if self := n.getSelf(); self != nil && self.Parent != "" {
		parent = "its parent " + self.Parent
	}
	writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf(
		"%s is at the root only: node %s is a site under %s. Run this command with --server naming the root and the root's admin token; at this node, `outpost status` shows its own state and its children",
		what, n.name, parent))
}
